#!/usr/bin/env python3
"""Fan-out benchmark of the live path: P publishers at R readings/s each, S watchers.

The same load generator drives the site (``--target chatsite``: daphne or uvicorn, the
channel layer, the sensor consumers) and the plain relay of ``bench/relay.py``
(``--target relay``), which has the same socket paths:

* S watchers open ``/ws/sensors/<slug>`` and wait until every one is connected;
* P publishers open ``/ws/sensors/<slug>/publish`` and each sends R readings a second for
  ``--duration`` seconds, one reading a frame (``--batch`` for more), each reading carrying
  its send time as the metric ``sent_ms`` (``time.time() * 1000``) and a sequence number
  as the metric ``seq``; the relay forwards the frame as it came, the site stores it and
  sends a ``reading`` frame;
* every watcher notes when each reading arrives. After the publishers stop, the watchers
  get up to ``--drain`` seconds for what is still in flight. Watchers run on
  ``rawws.py``, cheap per frame, so the generator is not what gives out first
  (``--watcher-client websockets`` for the library's client, about 10 µs a frame).

It prints readings delivered per second, expected vs delivered (loss), duplicates and the
publish-to-receive latency p50/p95/p99/max. With ``--redis`` (chatsite only) it also reads
the ``store`` consumer group of ``sensors:readings:<slug>`` before and after the run, and
reports how far the stream processors were behind when publishing stopped, how long they
took to catch up, and the rate at which they stored readings. ``--pid NAME=PID`` samples
a process (the server, Redis) for CPU% and RSS over the run.

``--find-max`` keeps the watchers connected and steps the per-publisher rate up
(``--start-rate``, times ``--step-factor``) until a step loses readings or its p99 exceeds
``--max-p99`` ms, then bisects ``--refine`` times between the last good and first bad
rate; it reports the highest delivery rate (readings x watchers a second) that passed.

``--publishers 0`` opens the watchers and holds them idle for ``--duration`` seconds:
with ``--pid`` that measures what idle sockets cost the server.

Everything is bounded: each phase by its own time limit, the whole run by ``--timeout``.
Only the standard library, ``websockets`` and ``redis`` are used (uvloop if installed and
``--uvloop``). Targets must be on this machine (loopback). Examples::

    .venv/bin/python bench/fanout.py --target relay --url http://127.0.0.1:8192 \\
        --sensor fan1 --publishers 1 --rate 50 --watchers 100 --duration 20
    .venv/bin/python bench/fanout.py --target chatsite --url http://127.0.0.1:8191 \\
        --sensor fan1 --key "$KEY" --redis redis://127.0.0.1:6491/0 \\
        --publishers 1 --rate 50 --watchers 100 --duration 20 --pid server=1234

The exit status is 0 when nothing was lost (in --find-max: when some step passed).
See bench/README.md and docs/performance-fanout.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from rawws import HandshakeError, RawWatcher, raw_watch
from stats import percentile_summary
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SEQ_STEP = 10_000_000  # seq = step * SEQ_STEP + publisher * SEQ_PUB + n
SEQ_PUB = 100_000
CHECK_EVERY = 64  # raw watchers: every 64th frame is also parsed in full and compared
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- small helpers -----------------------------------------------------------------------


def ws_base(url: str) -> tuple[str, str]:
    """The ws:// base for sockets and the Origin header, from an http(s)/ws(s) URL."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        sys.exit(f"fanout.py only loads servers on this machine (loopback), not {parts.hostname}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}[parts.scheme]
    origin_scheme = "https" if scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}", f"{origin_scheme}://{parts.netloc}"


class ProcSampler:
    """CPU seconds and RSS of processes from /proc, between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = 0.0
        self.cpu0: dict[str, float] = {}
        self.rss0: dict[str, int | None] = {}

    @staticmethod
    def cpu_seconds(pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
        except (OSError, IndexError, ValueError):
            return None

    @staticmethod
    def rss_kib(pid: int) -> int | None:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = {n: self.cpu_seconds(p) or 0.0 for n, p in self.pids.items()}
        self.rss0 = {n: self.rss_kib(p) for n, p in self.pids.items()}

    def stop(self) -> dict[str, dict[str, Any]]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        out = {}
        for name, pid in self.pids.items():
            cpu = self.cpu_seconds(pid)
            rss = self.rss_kib(pid)
            out[name] = {
                "pid": pid,
                "cpu_pct": None
                if cpu is None
                else round(100 * (cpu - self.cpu0[name]) / elapsed, 1),
                "rss_mib_start": None
                if self.rss0[name] is None
                else round(self.rss0[name] / 1024, 1),
                "rss_mib_end": None if rss is None else round(rss / 1024, 1),
            }
        return out


def machine_cpu() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all CPUs, from /proc/stat; busy counts steal."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields) - idle, sum(fields), steal


def machine_busy_pct(start: tuple[int, int, int], end: tuple[int, int, int]) -> float | None:
    """How busy the whole machine was between two machine_cpu() samples (100 = all cores)."""
    total = end[1] - start[1]
    return round(100 * (end[0] - start[0]) / total, 1) if total > 0 else None


def machine_steal_pct(start: tuple[int, int, int], end: tuple[int, int, int]) -> float | None:
    """The share of CPU time the hypervisor gave other guests (a virtual machine's noise)."""
    total = end[1] - start[1]
    return round(100 * (end[2] - start[2]) / total, 1) if total > 0 else None


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- what one step measured --------------------------------------------------------------


@dataclass
class Step:
    """One publishing phase at one rate: what was sent and what the watchers received."""

    index: int
    rate: float
    watchers: int
    seq_base: int
    sent: int = 0
    acked: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    stale: int = 0  # frames of an earlier step arriving during this one
    latencies: list[float] = field(default_factory=list)
    seen: list[set[int]] = field(default_factory=list)
    start: float = 0.0  # wall-clock time publishing began
    publish_end: float = 0.0
    last_receive: float = 0.0
    send_lateness_max: float = 0.0  # how far the publishers fell behind schedule (s)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def take(self, watcher: int, seq: int, sent_ms: float, now: float) -> None:
        if not self.seq_base <= seq < self.seq_base + SEQ_STEP:
            self.stale += 1
            return
        seen = self.seen[watcher]
        if seq in seen:
            self.duplicates += 1
            return
        seen.add(seq)
        self.received += 1
        self.latencies.append(now * 1000 - sent_ms)
        self.last_receive = now

    @property
    def expected(self) -> int:
        return self.sent * self.watchers

    def summary(self) -> dict[str, Any]:
        expected = self.expected
        lost = expected - self.received
        window = max((self.last_receive or self.publish_end) - self.start, 1e-9)
        publish_window = max(self.publish_end - self.start, 1e-9)
        return {
            "rate_per_publisher": self.rate,
            "readings_sent": self.sent,
            "readings_acked": self.acked,
            "publish_rate": round(self.sent / publish_window, 1),
            "watchers": self.watchers,
            "expected": expected,
            "delivered": self.received,
            "lost": lost,
            "loss_pct": round(100 * lost / expected, 3) if expected else 0.0,
            "duplicates": self.duplicates,
            "stale_from_earlier_step": self.stale,
            "delivered_per_s": round(self.received / window, 1),
            "latency_ms": percentile_summary(self.latencies),
            "publisher_behind_schedule_max_ms": round(self.send_lateness_max * 1000, 1),
            "errors": self.errors,
        }


def frame_marks(payload: bytes) -> list[tuple[int, float]]:
    """(seq, sent_ms) of every reading in a frame, found without parsing the whole frame.

    Readings are flat objects of numbers, so each ``values`` object runs from the brace
    before ``"sent_ms":`` to the next closing brace.
    """
    marks = []
    pos = payload.find(b'"sent_ms":')
    while pos >= 0:
        opening = payload.rfind(b"{", 0, pos)
        closing = payload.find(b"}", pos)
        seq_at = payload.find(b'"seq":', opening, closing)
        if opening < 0 or closing < 0 or seq_at < 0:
            break
        seq = int(_number(payload, seq_at + 6, closing))  # the site stores numbers as floats
        marks.append((seq, _number(payload, pos + 10, closing)))
        pos = payload.find(b'"sent_ms":', closing)
    return marks


def _number(payload: bytes, start: int, closing: int) -> float:
    stop = payload.find(b",", start, closing)
    return float(payload[start : stop if stop >= 0 else closing])


def frame_marks_json(payload: bytes | str) -> list[tuple[int, float]]:
    """frame_marks by parsing the frame in full: the check of the fast path."""
    msg = json.loads(payload)
    marks = []
    for item in msg if isinstance(msg, list) else [msg]:
        values = item.get("values") if isinstance(item, dict) else None
        if isinstance(values, dict) and "sent_ms" in values:
            marks.append((int(values["seq"]), float(values["sent_ms"])))
    return marks


# --- the store group's progress (chatsite only) ------------------------------------------


def id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


class StoreWatch:
    """The `store` group of the sensor's stream, sampled before and after publishing."""

    def __init__(self, url: str, slug: str, group: str = "store") -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url, decode_responses=True)
        self.key = f"sensors:readings:{slug}"
        self.group = group

    async def sample(self) -> dict[str, Any] | None:
        try:
            info = await self.client.xinfo_stream(self.key)
            groups = await self.client.xinfo_groups(self.key)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        group = next((g for g in groups if g["name"] == self.group), None)
        if group is None:
            return {"error": f"no {self.group!r} group on {self.key} (processors not running?)"}
        return {
            "t": time.time(),
            "last_id": info["last-generated-id"],
            "length": info["length"],
            "delivered_id": group["last-delivered-id"],
            "pending": group["pending"],
        }

    async def count_between(self, after: str, upto: str) -> int:
        """Entries with after < id <= upto (the stream holds them: trimming is far off)."""
        if id_tuple(upto) <= id_tuple(after):
            return 0
        count, cursor = 0, f"({after}"
        while True:
            chunk = await self.client.xrange(self.key, min=cursor, max=upto, count=5000)
            count += len(chunk)
            if len(chunk) < 5000:
                return count
            cursor = f"({chunk[-1][0]}"

    async def report(self, before: dict[str, Any], end: dict[str, Any], wait: float
                     ) -> dict[str, Any]:  # fmt: skip
        """Lag when publishing stopped, time to catch up, and the store's rate."""
        if "error" in before or "error" in end:
            return {"error": before.get("error") or end.get("error")}
        added = await self.count_between(before["last_id"], end["last_id"])
        behind_at_end = await self.count_between(end["delivered_id"], end["last_id"])
        processed_in_run = await self.count_between(before["delivered_id"], end["delivered_id"])
        processed_in_run -= end["pending"] - before["pending"]
        caught = None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            now = await self.sample()
            if (
                now
                and "error" not in now
                and id_tuple(now["delivered_id"]) >= id_tuple(end["last_id"])
                and now["pending"] <= before["pending"]
            ):
                caught = now["t"]
                break
            await asyncio.sleep(0.1)
        run_seconds = max(end["t"] - before["t"], 1e-9)
        out: dict[str, Any] = {
            "readings_added": added,
            "store_behind_at_end": behind_at_end + end["pending"],
            "store_pending_at_end": end["pending"],
            "store_processed_during_run": processed_in_run,
            "store_rate_during_run": round(processed_in_run / run_seconds, 1),
            "added_rate": round(added / run_seconds, 1),
            "keep_up_ratio": round(processed_in_run / added, 3) if added else None,
        }
        if caught is None:
            out["caught_up_after_s"] = None
            out["note"] = f"store had not caught up {wait:.0f}s after publishing stopped"
        else:
            out["caught_up_after_s"] = round(caught - end["t"], 2)
            out["store_rate_overall"] = round(added / max(caught - before["t"], 1e-9), 1)
        return out

    async def close(self) -> None:
        await self.client.aclose()


# --- the load ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base, self.origin = ws_base(args.url)
        self.watch_url = f"{self.base}/ws/sensors/{args.sensor}"
        self.publish_url = f"{self.base}/ws/sensors/{args.sensor}/publish"
        self.step: Step | None = None
        self.sockets: list[ClientConnection] = []
        self.raw_sockets: list[RawWatcher] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.connect_errors: dict[str, int] = {}
        self.watcher_closed = 0
        self.compression = None if args.compression == "none" else "deflate"
        # --relay-frame site: the relay gets (and forwards) frames of the site's shape
        self.site_frames = args.target == "relay" and args.relay_frame == "site"
        self.json_opts: dict[str, Any] = {"separators": (",", ":")} if self.site_frames else {}

    # watchers ---------------------------------------------------------------------------

    async def open_watcher(self, index: int) -> None:
        if self.args.watcher_client == "raw":
            await self.open_raw_watcher(index)
            return
        try:
            ws = await connect(
                self.watch_url, origin=self.origin, compression=self.compression,  # type: ignore[arg-type]
                open_timeout=30, max_size=2**24, max_queue=None,
            )  # fmt: skip
        except (OSError, WebSocketException, TimeoutError) as exc:
            self.connect_error(f"watch_{type(exc).__name__}")
            return
        self.sockets.append(ws)
        if self.args.target == "chatsite":  # the first frame is the history
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if first.get("type") != "history":
                    self.connect_error(f"watch_first_{first.get('type')}_{first.get('code', '')}")
                    await ws.close()
                    return
            except (ConnectionClosed, TimeoutError, ValueError) as exc:
                self.connect_error(f"watch_history_{type(exc).__name__}")
                return
        self.tasks.append(asyncio.create_task(self.watch(index, ws)))

    async def watch(self, index: int, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                now = time.time()
                step = self.step
                if step is None:
                    continue
                for seq, sent_ms in frame_marks_json(raw):  # none in status frames, errors
                    step.take(index, seq, sent_ms, now)
        except ConnectionClosed:
            self.watcher_closed += 1

    def connect_error(self, code: str) -> None:
        self.connect_errors[code] = self.connect_errors.get(code, 0) + 1

    async def open_raw_watcher(self, index: int) -> None:
        """A watcher on rawws: frames are handled in data_received, with no task per socket."""
        history = asyncio.get_running_loop().create_future()
        frames = 0

        def on_text(payload: bytes, now: float) -> None:
            nonlocal frames
            frames += 1
            if not history.done():  # chatsite: the first frame is the history
                history.set_result(payload)
                return
            step = self.step
            if step is None:
                return
            try:
                marks = frame_marks(payload)
                if frames % CHECK_EVERY == 0 and marks != frame_marks_json(payload):
                    raise ValueError("the fast read differs from the full parse")
            except (ValueError, KeyError, TypeError, AttributeError):
                step.error("watch_frame_misread")
                return
            for seq, sent_ms in marks:
                step.take(index, seq, sent_ms, now)

        if self.args.target != "chatsite":
            history.set_result(b"")
        try:
            ws = await raw_watch(self.watch_url, origin=self.origin, on_text=on_text)
        except (OSError, HandshakeError, TimeoutError) as exc:
            self.connect_error(f"watch_{type(exc).__name__}")
            return
        self.raw_sockets.append(ws)
        await asyncio.wait([history, ws.closed], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not history.done():
            code = ws.closed.result() if ws.closed.done() else "timeout"
            self.connect_error(f"watch_history_closed_{code}")
            ws.close()
            return
        try:
            if self.args.target == "chatsite":
                msg = json.loads(history.result())
                if msg.get("type") != "history":
                    self.connect_error(f"watch_first_{msg.get('type')}_{msg.get('code', '')}")
                    ws.close()
                    return
        except ValueError as exc:
            self.connect_error(f"watch_history_{type(exc).__name__}")
            ws.close()
            return
        self.tasks.append(asyncio.create_task(self.raw_closed(ws)))

    async def raw_closed(self, ws: RawWatcher) -> None:
        await ws.closed
        self.watcher_closed += 1

    async def open_watchers(self, count: int) -> float:
        t0 = time.monotonic()
        sem = asyncio.Semaphore(self.args.connect_concurrency)

        async def one(i: int) -> None:
            async with sem:
                await self.open_watcher(i)

        await asyncio.gather(*(one(i) for i in range(count)))
        return time.monotonic() - t0

    # publishers -------------------------------------------------------------------------

    async def publisher(self, p: int, step: Step, stop_at: float) -> None:
        headers = {}
        url = self.publish_url
        if self.args.target == "chatsite":
            if self.args.key_in_query:
                url += f"?key={self.args.key}"
            else:
                headers["Authorization"] = f"Bearer {self.args.key}"
        try:
            ws = await connect(
                url, additional_headers=headers, compression=self.compression,  # type: ignore[arg-type]
                open_timeout=30, max_queue=None,
            )  # fmt: skip
        except (OSError, WebSocketException, TimeoutError) as exc:
            step.error(f"publish_connect_{type(exc).__name__}")
            return

        async def acks() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg.get("type") == "ack":
                        step.acked += len(msg.get("ids", [None]))
                    elif msg.get("type") == "error":
                        step.error(f"frame_{msg.get('code')}")

        reader = asyncio.create_task(acks())
        batch = self.args.batch
        interval = batch / step.rate
        n = 0
        seq0 = step.seq_base + p * SEQ_PUB
        start = time.monotonic() + (p / max(self.args.publishers, 1)) * interval  # stagger
        try:
            while True:
                due = start + (n // batch) * interval
                now = time.monotonic()
                if due >= stop_at or n >= SEQ_PUB - batch:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                else:
                    step.send_lateness_max = max(step.send_lateness_max, now - due)
                readings = []
                for _ in range(batch):
                    readings.append(self.reading(time.time() * 1000, seq0 + n))
                    n += 1
                await ws.send(json.dumps(readings[0] if batch == 1 else readings, **self.json_opts))
                step.sent += batch
            # the acks of the last frames, briefly
            deadline = time.monotonic() + 5
            while (  # noqa: ASYNC110 - bounded poll of counters that many tasks bump
                step.acked + sum(step.errors.values()) < step.sent and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.02)
        except ConnectionClosed as exc:
            step.error(f"publish_closed_{exc.rcvd.code if exc.rcvd else 'none'}")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await ws.close()

    def reading(self, sent_ms: float, seq: int) -> dict[str, Any]:
        """What a publisher sends for one reading.

        The relay forwards frames as they come, so with --relay-frame site the publisher
        sends it what the site sends its watchers for a reading (the same keys, compact):
        both targets then deliver frames of the same shape and size.
        """
        values = {"sent_ms": sent_ms, "seq": seq}
        if self.site_frames:
            ms = int(sent_ms)
            return {"type": "reading", "sensor": self.args.sensor, "id": f"{ms}-{seq % 100}",
                    "ts": ms, "values": values}  # fmt: skip
        return {"values": values}

    # one step ---------------------------------------------------------------------------

    async def run_step(self, index: int, rate: float, duration: float,
                       store: StoreWatch | None) -> dict[str, Any]:  # fmt: skip
        watchers = len(self.tasks)
        step = Step(index=index, rate=rate, watchers=watchers, seq_base=index * SEQ_STEP)
        step.seen = [set() for _ in range(self.args.watchers)]
        sampler = ProcSampler(self.args.pids)
        store_before = await store.sample() if store else None
        self.step = step
        sampler.start()
        cpu0 = own_cpu_seconds()
        machine0 = machine_cpu()
        step.start = time.time()
        t0 = time.monotonic()
        stop_at = t0 + duration
        await asyncio.gather(
            *(self.publisher(p, step, stop_at) for p in range(self.args.publishers))
        )
        step.publish_end = time.time()
        store_end = await store.sample() if store else None
        # drain: wait for what is in flight, at most --drain seconds
        deadline = time.monotonic() + self.args.drain
        while step.received < step.expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        procs = sampler.stop()
        gen_cpu = own_cpu_seconds() - cpu0
        wall = time.monotonic() - t0
        result = step.summary()
        result["generator_cpu_pct"] = round(100 * gen_cpu / wall, 1)
        machine1 = machine_cpu()
        result["machine_busy_pct"] = machine_busy_pct(machine0, machine1)
        result["steal_pct"] = machine_steal_pct(machine0, machine1)
        result["loadavg_end"] = os.getloadavg()[0]
        if procs:
            result["processes"] = procs
        if store:
            result["store"] = await store.report(store_before, store_end, self.args.store_wait)
        self.step = None
        return result

    async def try_rate(self, index: int, rate: float, steps: list[dict[str, Any]],
                       store: StoreWatch | None) -> tuple[dict[str, Any], int]:  # fmt: skip
        """One find-max step; a failed step is tried again up to --step-retries times.

        On a shared machine a neighbour's burst can push one step's p99 over the bound; a
        real limit fails every attempt, a burst does not.
        """
        for attempt in range(self.args.step_retries + 1):
            if attempt:
                await asyncio.sleep(self.args.pause)
            result = await self.run_step(index, rate, self.args.step_duration, store)
            result["passed"] = self.passed(result)
            result["attempt"] = attempt + 1
            steps.append(result)
            self.print_step(result)
            index += 1
            if result["passed"]:
                break
        return result, index

    def passed(self, result: dict[str, Any]) -> bool:
        p99 = result["latency_ms"]["p99"]
        return (
            result["lost"] == 0 and not result["errors"] and p99 is not None
            and p99 <= self.args.max_p99
        )  # fmt: skip

    # the whole run ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        args = self.args
        out: dict[str, Any] = {
            "target": args.target, "url": args.url, "sensor": args.sensor,
            "publishers": args.publishers, "watchers_wanted": args.watchers,
            "batch": args.batch, "compression": args.compression, "relay_frame": args.relay_frame,
            "watcher_client": args.watcher_client,
            "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        }  # fmt: skip
        sampler = ProcSampler(args.pids)
        sampler.start()
        connect_s = await self.open_watchers(args.watchers)
        out["watchers_connected"] = len(self.tasks)
        out["connect_s"] = round(connect_s, 2)
        out["connect_errors"] = self.connect_errors
        store = (
            StoreWatch(args.redis, args.sensor)
            if args.redis and args.target == "chatsite"
            else None
        )
        try:
            if args.publishers == 0:  # idle sockets
                after_connect = sampler.stop() if args.pids else {}
                hold = ProcSampler(args.pids)
                hold.start()
                await asyncio.sleep(args.duration)
                out["idle"] = {"after_connect": after_connect, "hold": hold.stop(),
                               "hold_s": args.duration}  # fmt: skip
                return out
            await asyncio.sleep(args.warmup)
            if not args.find_max:
                out["result"] = await self.run_step(1, args.rate, args.duration, store)
                return out
            steps = []
            rate, good, bad, index = args.start_rate, None, None, 1
            while index <= args.max_steps and rate <= args.max_rate:
                result, index = await self.try_rate(index, rate, steps, store)
                if result["passed"]:
                    good = result
                    rate = round(rate * args.step_factor, 1)
                else:
                    bad = result
                    break
                await asyncio.sleep(args.pause)
            for _ in range(args.refine if good and bad else 0):
                if index > args.max_steps:
                    break
                rate = round((good["rate_per_publisher"] + bad["rate_per_publisher"]) / 2, 1)
                await asyncio.sleep(args.pause)
                result, index = await self.try_rate(index, rate, steps, store)
                if result["passed"]:
                    good = result
                else:
                    bad = result
            out["steps"] = steps
            out["max_sustainable"] = None if good is None else {
                "rate_per_publisher": good["rate_per_publisher"],
                "readings_per_s": good["publish_rate"],
                "delivered_per_s": good["delivered_per_s"],
                "latency_ms": good["latency_ms"],
            }  # fmt: skip
            out["first_failing"] = None if bad is None else {
                "rate_per_publisher": bad["rate_per_publisher"],
                "loss_pct": bad["loss_pct"], "latency_ms": bad["latency_ms"],
            }  # fmt: skip
            out["max_p99_bound_ms"] = args.max_p99
            return out
        finally:
            if store:
                await store.close()
            for ws in self.sockets:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2)
            for raw in self.raw_sockets:
                raw.close()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    @staticmethod
    def print_step(r: dict[str, Any]) -> None:
        lat = r["latency_ms"]
        print(
            f"  step rate={r['rate_per_publisher']:>8}/s/pub  delivered/s={r['delivered_per_s']:>9}"
            f"  loss={r['loss_pct']:>7}%  p50={lat['p50']}  p99={lat['p99']}  max={lat['max']}"
            f"  gen_cpu={r['generator_cpu_pct']}%  machine={r['machine_busy_pct']}%"
            f"  steal={r['steal_pct']}%"
            f"  {'PASS' if r['passed'] else 'FAIL'}",
            flush=True,
        )


# --- output ------------------------------------------------------------------------------


def print_result(out: dict[str, Any]) -> None:
    print(
        f"target           {out['target']} {out['url']} sensor={out['sensor']} loop={out['loop']}"
    )
    print(f"watchers         {out['watchers_wanted']} wanted, {out['watchers_connected']} connected"
          f" in {out['connect_s']} s; errors {out['connect_errors'] or 'none'}")  # fmt: skip
    if "idle" in out:
        for phase in ("after_connect", "hold"):
            for name, p in out["idle"][phase].items():
                print(f"idle {phase:<13} {name}: cpu {p['cpu_pct']}%  rss {p['rss_mib_start']}"
                      f" -> {p['rss_mib_end']} MiB")  # fmt: skip
        return
    results = [out["result"]] if "result" in out else out.get("steps", [])
    for r in results:
        lat = r["latency_ms"]
        print(
            f"publishing       {out['publishers']} x {r['rate_per_publisher']}/s "
            f"(batch {out['batch']}): {r['readings_sent']} sent, {r['readings_acked']} acked,"
            f" {r['publish_rate']}/s; behind schedule max"
            f" {r['publisher_behind_schedule_max_ms']} ms"
        )
        print(
            f"delivery         {r['expected']} expected, {r['delivered']} delivered, "
            f"{r['lost']} lost ({r['loss_pct']}%), {r['duplicates']} duplicates"
        )
        print(f"throughput       {r['delivered_per_s']} readings delivered/s")
        print(
            f"latency (ms)     n={lat['n']} p50={lat['p50']} p95={lat['p95']} p99={lat['p99']}"
            f" max={lat['max']}"
        )
        print(f"errors           {r['errors'] or 'none'}")
        print(
            f"generator cpu    {r['generator_cpu_pct']}% of one core; whole machine "
            f"{r['machine_busy_pct']}% busy (all cores, {r['steal_pct']}% stolen by the "
            f"hypervisor), load {r['loadavg_end']:.2f}"
        )
        for name, p in r.get("processes", {}).items():
            print(
                f"process {name:<8} cpu {p['cpu_pct']}%  rss {p['rss_mib_start']} -> "
                f"{p['rss_mib_end']} MiB"
            )
        if "store" in r:
            s = r["store"]
            if "error" in s:
                print(f"store group      {s['error']}")
            else:
                print(
                    f"store group      {s['readings_added']} added ({s['added_rate']}/s), "
                    f"{s['store_processed_during_run']} stored during the run "
                    f"({s['store_rate_during_run']}/s, keep-up {s['keep_up_ratio']}); "
                    f"{s['store_behind_at_end']} behind at the end, caught up after "
                    f"{s['caught_up_after_s']} s"
                )
    if "max_sustainable" in out:
        m = out["max_sustainable"]
        print(
            f"max sustainable  {m and m['delivered_per_s']} delivered/s "
            f"({m and m['rate_per_publisher']}/s per publisher) with p99 <= "
            f"{out['max_p99_bound_ms']} ms and no loss; first failing: {out['first_failing']}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["chatsite", "relay"], required=True)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--sensor", default="fan1")
    p.add_argument("--key", default="", help="the sensor's key (chatsite)")
    p.add_argument("--key-in-query", action="store_true", help="send the key as ?key= (chatsite)")
    p.add_argument(
        "--relay-frame",
        choices=["publisher", "site"],
        default="publisher",
        help="relay: forward the publisher's small frame, or a frame shaped like "
        "the site's reading frame (the same bytes for the watchers to read)",
    )
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--rate", type=float, default=50.0, help="readings/s per publisher")
    p.add_argument("--batch", type=int, default=1, help="readings per frame")
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds between connect and load")
    p.add_argument("--drain", type=float, default=5.0, help="most seconds to wait for stragglers")
    p.add_argument("--redis", default="", help="Redis URL: report the store group (chatsite)")
    p.add_argument("--store-wait", type=float, default=15.0)
    p.add_argument("--pid", action="append", default=[], metavar="NAME=PID",
                   help="sample a process's CPU%% and RSS (repeatable)")  # fmt: skip
    p.add_argument("--compression", choices=["deflate", "none"], default="deflate",
                   help="offer permessage-deflate like browsers do (default), or not")  # fmt: skip
    p.add_argument("--watcher-client", choices=["raw", "websockets"], default="raw",
                   help="watchers' client: bench/rawws.py (default), cheap enough per frame "
                   "that the generator is not the limit; or the websockets library's")  # fmt: skip
    p.add_argument("--connect-concurrency", type=int, default=50)
    p.add_argument("--find-max", action="store_true")
    p.add_argument("--start-rate", type=float, default=50.0)
    p.add_argument("--step-factor", type=float, default=1.5)
    p.add_argument("--max-rate", type=float, default=5000.0)
    p.add_argument("--max-steps", type=int, default=16, help="most steps, retries included")
    p.add_argument("--refine", type=int, default=2)
    p.add_argument("--step-retries", type=int, default=1,
                   help="tries again of a failed step before it counts as failed")  # fmt: skip
    p.add_argument("--step-duration", type=float, default=10.0)
    p.add_argument("--pause", type=float, default=2.0, help="seconds between find-max steps")
    p.add_argument("--max-p99", type=float, default=100.0, help="ms; a step above it fails")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    p.add_argument("--uvloop", action="store_true", help="run the generator on uvloop")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = p.parse_args(argv)
    args.pids = {}
    for item in args.pid:
        name, _, pid = item.partition("=")
        args.pids[name] = int(pid)
    if args.target == "chatsite" and args.publishers and not args.key:
        p.error("--target chatsite needs --key")
    if args.rate <= 0 or args.start_rate <= 0 or args.batch < 1:
        p.error("rates must be positive and --batch at least 1")
    return args


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.watchers + args.publishers + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    bench = Bench(args)
    return await asyncio.wait_for(bench.run(), args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ws_base(args.url)  # refuse non-loopback targets before anything else
    runner: Any = asyncio.run
    if args.uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            print("uvloop is not installed; using asyncio's loop", file=sys.stderr)
    out = runner(main_async(args))
    print_result(out)
    if args.json:
        print(json.dumps(out, separators=(",", ":")))
    if "idle" in out:
        return 0 if out["watchers_connected"] == args.watchers else 1
    if args.find_max:
        return 0 if out.get("max_sustainable") else 1
    return 0 if out["result"]["lost"] == 0 and not out["result"]["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
