#!/usr/bin/env python3
"""Compare targets' maximum sustainable rate with their steps interleaved in time.

On a shared machine the speed of the same server drifts by a third within minutes, so
two ``fanout.py --find-max`` runs a few minutes apart compare two machines as much as two
servers. This runs ``fanout.py`` at fixed rates instead, one short step at a time, and
alternates the targets at every rate (the order rotates from rate to rate), so the
targets' steps at a rate are seconds apart. In each round every target climbs the same
ladder of rates until a step fails twice in a row; its ceiling for the round is the last
rate it passed. A step passes when every reading reached every watcher, with no errors
and p99 within ``--max-p99`` ms. On a virtual machine the hypervisor can take the CPUs
away for seconds (steal time, in /proc/stat); a step during which it took more than
``--max-steal`` percent is void and runs again after ``--steal-wait`` seconds.

The servers must already be running. Example (the site on 8191, the relay on 8192)::

    .venv/bin/python bench/compare.py --rounds 3 \\
        --target relay=relay@http://127.0.0.1:8192 \\
        --target site=chatsite@http://127.0.0.1:8191 --key "$KEY" \\
        --redis redis://127.0.0.1:6491/0 --out compare.jsonl -- --uvloop

Arguments after ``--`` go to every ``fanout.py`` run. Prints each step, then a table of
each target's ceiling per round; ``--out`` keeps every step as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FANOUT = Path(__file__).with_name("fanout.py")
LADDER = "569,854,1281,1441,1601,1761,1921,2162,2402,2642,2882"


def parse_target(text: str) -> tuple[str, str, str]:
    """LABEL=KIND@URL -> (label, kind, url)."""
    label, _, rest = text.partition("=")
    kind, _, url = rest.partition("@")
    if not label or kind not in ("relay", "chatsite") or not url:
        raise argparse.ArgumentTypeError(f"expected LABEL=relay|chatsite@URL, not {text!r}")
    return label, kind, url


def step(args: argparse.Namespace, label: str, kind: str, url: str, rate: float) -> dict[str, Any]:
    """One fixed-rate fanout.py run; its result with a verdict."""
    cmd = [
        sys.executable, str(FANOUT), "--target", kind, "--url", url, "--sensor", args.sensor,
        "--publishers", "1", "--watchers", str(args.watchers), "--rate", str(rate),
        "--duration", str(args.duration), "--json", *args.fanout,
    ]  # fmt: skip
    if kind == "chatsite":
        cmd += ["--key", args.key] + (["--redis", args.redis] if args.redis else [])
    for pid in args.pids.get(label, []):
        cmd += ["--pid", pid]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    except subprocess.TimeoutExpired:  # the child is killed; the step counts as failed
        return {"passed": False, "why": "fanout.py timed out"}
    lines = run.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
        result = out["result"]
    except (IndexError, KeyError, ValueError):
        return {"passed": False, "why": "no result: " + (run.stderr or run.stdout)[-300:]}
    p99 = result["latency_ms"]["p99"]
    connected = out["watchers_connected"] == args.watchers and not out["connect_errors"]
    passed = (
        connected and result["lost"] == 0 and not result["errors"]
        and p99 is not None and p99 <= args.max_p99
    )  # fmt: skip
    why = "" if passed else (
        "watchers missing" if not connected else f"loss {result['loss_pct']}%"
        if result["lost"] else f"errors {result['errors']}" if result["errors"] else f"p99 {p99}"
    )  # fmt: skip
    return {"passed": passed, "why": why, "result": result}


def steady_step(
    args: argparse.Namespace, label: str, kind: str, url: str, rate: float
) -> dict[str, Any]:
    """step(), run again while the hypervisor took more than --max-steal of the machine."""
    for _ in range(args.void_retries):
        r = step(args, label, kind, url, rate)
        steal = r.get("result", {}).get("steal_pct") or 0.0
        if steal <= args.max_steal:
            return r
        print(f"round - {label:>14} {rate:>7}/s void: {steal}% stolen; waiting", flush=True)
        time.sleep(args.steal_wait)
    raise SystemExit(f"the machine stayed stolen (> {args.max_steal}%) for {label} at {rate}/s")


def ladder_round(args: argparse.Namespace, index: int, out: Any) -> dict[str, float | None]:
    """One round: every target climbs the ladder, interleaved; returns each one's ceiling."""
    ceiling: dict[str, float | None] = {label: None for label, _, _ in args.target}
    climbing = list(ceiling)
    for position, rate in enumerate(args.rates):
        order = [t for t in args.target if t[0] in climbing]
        shift = position % max(len(order), 1)
        for label, kind, url in order[shift:] + order[:shift]:
            for attempt in (1, 2):
                r = steady_step(args, label, kind, url, rate)
                res = r.get("result", {})
                print(
                    f"round {index} {label:>14} {rate:>7}/s try {attempt}: "
                    f"{'PASS' if r['passed'] else 'FAIL ' + r['why']}  "
                    f"p99={res.get('latency_ms', {}).get('p99')}  "
                    f"server={res.get('processes', {}).get('server', {}).get('cpu_pct')}%  "
                    f"machine={res.get('machine_busy_pct')}%  steal={res.get('steal_pct')}%",
                    flush=True,
                )
                if out:
                    row = {"round": index, "target": label, "rate": rate, "attempt": attempt,
                           "when": time.strftime("%H:%M:%S"), **r}  # fmt: skip
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                if r["passed"]:
                    ceiling[label] = rate
                    break
                time.sleep(args.pause)
            else:
                climbing.remove(label)
            time.sleep(args.pause)
        if not climbing:
            break
    return ceiling


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=parse_target, action="append", required=True,
                   metavar="LABEL=KIND@URL", help="relay|chatsite@URL (repeat)")  # fmt: skip
    p.add_argument("--rates", default=LADDER, help="readings/s, ascending, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of publishing a step")
    p.add_argument("--max-p99", type=float, default=100.0)
    p.add_argument("--pause", type=float, default=2.0, help="seconds between steps")
    p.add_argument("--max-steal", type=float, default=5.0,
                   help="%% of CPU time stolen by the hypervisor above which a step is "
                   "void and run again")  # fmt: skip
    p.add_argument("--steal-wait", type=float, default=20.0, help="seconds before a rerun")
    p.add_argument("--void-retries", type=int, default=30)
    p.add_argument("--sensor", default="fan1")
    p.add_argument("--key", default="", help="the sensor's key (chatsite targets)")
    p.add_argument("--redis", default="", help="Redis URL (chatsite targets' store group)")
    p.add_argument("--pid", action="append", default=[], metavar="LABEL:NAME=PID",
                   help="sample a process's CPU in LABEL's steps (repeat)")  # fmt: skip
    p.add_argument("--out", default="", help="append every step here as a JSON line")
    p.add_argument("fanout", nargs=argparse.REMAINDER, help="-- then arguments for fanout.py")
    args = p.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.fanout = args.fanout[1:] if args.fanout[:1] == ["--"] else args.fanout
    args.pids = {}
    for item in args.pid:
        label, _, pid = item.partition(":")
        args.pids.setdefault(label, []).append(pid)
    if any(kind == "chatsite" for _, kind, _ in args.target) and not args.key:
        p.error("a chatsite target needs --key")
    out = open(args.out, "a") if args.out else None  # noqa: SIM115 - closed below
    try:
        ceilings = [ladder_round(args, index, out) for index in range(1, args.rounds + 1)]
    finally:
        if out:
            out.close()
    labels = [label for label, _, _ in args.target]
    print("\nround | " + " | ".join(labels))
    for index, ceiling in enumerate(ceilings, 1):
        print(f"{index} | " + " | ".join(f"{ceiling[label]}" for label in labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
