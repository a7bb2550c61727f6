#!/usr/bin/env python3
"""Load test of the assistant chat: many concurrent conversations over the real stack.

Against an already running system (``make run`` or ``manage.py serve``) this script
creates ``--sessions`` chat sessions over HTTP, opens one WebSocket per session, and then,
in every session at once, holds a conversation of ``--messages`` messages: a session sends
its next message only after the final reply to the previous one arrived. It reports, in
milliseconds from the moment a message was sent, the p50/p95/p99 latency of

* the ack (the message is stored and the reply queued),
* the first delta of the reply (time to first token, as a user sees it),
* the final reply frame (the whole answer),

plus errors, timeouts and replies per second over the run. Only the Python standard
library and ``websockets`` are used:

    .venv/bin/python bench/chat_load.py --url http://127.0.0.1:8150 --sessions 20 --messages 5

Options: ``--json`` also prints the result as one JSON line at the end; ``--trace FILE``
writes one JSON line per message; ``--timeout`` (s) bounds the whole run (it then stops
and reports what it has); ``--reply-timeout`` (s) bounds the wait for one reply. The exit
status is 0 only if every reply arrived.

The server must allow the load. With the defaults a session may send 20 messages per
minute (CHAT_RATE_LIMIT) and one IP may create 30 sessions per minute
(CHAT_SESSION_CREATE_RATE_LIMIT), so start the system with raised limits, e.g.

    VAR_DIR=/tmp/bench-var .venv/bin/python manage.py migrate --noinput
    PORT=8150 EMBEDDED_REDIS_PORT=6451 VAR_DIR=/tmp/bench-var DEMO_SENSORS=0 \\
        CHAT_RATE_LIMIT=100000 CHAT_SESSION_CREATE_RATE_LIMIT=100000 \\
        .venv/bin/python manage.py serve

OFFLINE_CHUNK_DELAY (the offline provider's pause between words, default 0.03 s) sets how
long a reply takes to generate; 0 measures the pipeline alone. The WebSocket handshake
sends an Origin header built from ``--url``, so its host must be in ALLOWED_HOSTS.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stats import percentile_summary
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

MESSAGE_TEXT = "Load test message {n} of session {s}: how are you today?"


@dataclass
class Sample:
    """Timings (seconds after the send) of one message and its reply."""

    session: int
    number: int
    sent_at: float  # perf_counter() at the send
    message_id: int | None = None
    ack: float | None = None
    first_delta: float | None = None
    reply: float | None = None


@dataclass
class Stats:
    """Everything the run measured; sessions append to it as they go."""

    sessions_wanted: int = 0
    messages_wanted: int = 0
    sessions_created: int = 0
    sessions_connected: int = 0
    messages_sent: int = 0
    samples: list[Sample] = field(default_factory=list)
    connect_times: list[float] = field(default_factory=list)
    create_times: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    reply_timeouts: int = 0
    delta_mismatches: int = 0
    deltas: int = 0
    run_started: float | None = None
    run_ended: float | None = None
    stopped_by_timeout: bool = False

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def summary_ms(values: list[float]) -> dict[str, float | int | None]:
    """Count, p50/p95/p99 and max of durations in seconds, as milliseconds."""
    return percentile_summary(values, scale=1000, digits=1)


# --- HTTP: session creation ------------------------------------------------------------------

# Only 127.0.0.1 is meant to be targeted: never route through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def create_session(base_url: str, name: str, timeout: float) -> str:
    """POST /api/chat/sessions and return the new session's token."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/api/chat/sessions",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with _opener.open(request, timeout=timeout) as response:
        body = json.loads(response.read())
    return str(body["token"])


async def create_sessions(args: argparse.Namespace, stats: Stats) -> list[str | None]:
    """Create every session (a few requests in flight at a time); None where one failed."""
    gate = asyncio.Semaphore(args.create_concurrency)

    async def one(index: int) -> str | None:
        async with gate:
            started = time.perf_counter()
            try:
                token = await asyncio.to_thread(
                    create_session, args.url, f"bench {index}", args.reply_timeout
                )
            except urllib.error.HTTPError as exc:
                stats.error(f"create_http_{exc.code}")
                return None
            except (OSError, ValueError, KeyError) as exc:
                stats.error(f"create_{type(exc).__name__}")
                return None
            stats.create_times.append(time.perf_counter() - started)
            stats.sessions_created += 1
            return token

    return list(await asyncio.gather(*(one(i) for i in range(args.sessions))))


# --- WebSocket: one conversation ------------------------------------------------------------


def socket_urls(base_url: str) -> tuple[str, str]:
    """The ws(s):// base for sockets and the Origin header for the handshake."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}", f"{parts.scheme}://{parts.netloc}"


async def receive_json(ws: ClientConnection, seconds: float) -> dict[str, Any]:
    """The next text frame as a JSON object (TimeoutError after `seconds`)."""
    raw = await asyncio.wait_for(ws.recv(), seconds)
    frame = json.loads(raw)
    if not isinstance(frame, dict):
        raise ValueError("frame is not a JSON object")
    return frame


async def converse(
    ws: ClientConnection, index: int, args: argparse.Namespace, stats: Stats
) -> None:
    """Send the messages one after the other, each once the previous reply arrived."""
    for n in range(1, args.messages + 1):
        client_id = f"bench-{index}-{n}"
        started = time.perf_counter()
        sample = Sample(session=index, number=n, sent_at=started)
        await ws.send(
            json.dumps(
                {
                    "type": "message",
                    "text": MESSAGE_TEXT.format(n=n, s=index),
                    "client_id": client_id,
                }
            )
        )
        stats.messages_sent += 1
        stats.samples.append(sample)
        message_id: int | None = None
        parts: list[str] = []
        offset = 0
        mismatch = False
        deadline = started + args.reply_timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                stats.reply_timeouts += 1
                break
            try:
                frame = await receive_json(ws, remaining)
            except TimeoutError:
                stats.reply_timeouts += 1
                break
            now = time.perf_counter() - started
            kind = frame.get("type")
            if kind == "ack" and frame.get("client_id") == client_id:
                sample.ack = now
                message_id = sample.message_id = frame["message"]["id"]
            elif kind == "delta" and message_id is not None and frame.get("reply_to") == message_id:
                stats.deltas += 1
                if sample.first_delta is None:
                    sample.first_delta = now
                if frame.get("offset") != offset:
                    mismatch = True
                text = str(frame.get("text", ""))
                parts.append(text)
                offset += len(text)
            elif kind == "reply" and message_id is not None:
                reply = frame.get("message") or {}
                if reply.get("reply_to") != message_id:
                    continue
                sample.reply = now
                if reply.get("status") != "done":
                    stats.error(f"reply_status_{reply.get('status')}")
                if mismatch or "".join(parts) != reply.get("text"):
                    stats.delta_mismatches += 1
                break
            elif kind == "error":
                mine = frame.get("client_id") == client_id or (
                    message_id is not None and frame.get("reply_to") == message_id
                )
                if mine:
                    stats.error(f"frame_{frame.get('code')}")
                    break
                stats.error(f"frame_other_{frame.get('code')}")


async def run_session(
    index: int,
    token: str,
    args: argparse.Namespace,
    stats: Stats,
    ready: asyncio.Event,
    start: asyncio.Event,
) -> None:
    """Connect, wait for the history, wait for the common start, then converse."""
    ws_base, origin = socket_urls(args.url)
    began = time.perf_counter()
    try:
        async with connect(
            f"{ws_base}/ws/chat/{token}",
            origin=origin,  # type: ignore[arg-type]
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=args.reply_timeout,
            max_size=4 * 1024 * 1024,
        ) as ws:
            first = await receive_json(ws, args.reply_timeout)
            if first.get("type") != "history":
                stats.error(f"connect_got_{first.get('type')}")
                return
            stats.connect_times.append(time.perf_counter() - began)
            stats.sessions_connected += 1
            ready.set()
            await start.wait()
            await converse(ws, index, args, stats)
    except (OSError, TimeoutError, ValueError, KeyError, TypeError, WebSocketException) as exc:
        stats.error(f"socket_{type(exc).__name__}")
    finally:
        ready.set()


async def run(args: argparse.Namespace, stats: Stats) -> None:
    """Create the sessions, connect them all, then start every conversation at once."""
    tokens = await create_sessions(args, stats)
    start = asyncio.Event()
    readies: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    for index, token in enumerate(tokens):
        if token is None:
            continue
        ready = asyncio.Event()
        readies.append(ready)
        tasks.append(asyncio.create_task(run_session(index, token, args, stats, ready, start)))
    try:
        # Every socket is open (or failed) before the clock starts.
        await asyncio.gather(*(ready.wait() for ready in readies))
        stats.run_started = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
    finally:
        stats.run_ended = time.perf_counter()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- report ---------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """CPU time this client used (it shares the machine with the server)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def result(args: argparse.Namespace, stats: Stats) -> dict[str, Any]:
    """The run's numbers as one JSON-able dict."""
    wanted = args.sessions * args.messages
    replies = [s.reply for s in stats.samples if s.reply is not None]
    elapsed = (
        stats.run_ended - stats.run_started
        if stats.run_started is not None and stats.run_ended is not None
        else 0.0
    )
    return {
        "url": args.url,
        "sessions": args.sessions,
        "messages_per_session": args.messages,
        "sessions_created": stats.sessions_created,
        "sessions_connected": stats.sessions_connected,
        "messages_expected": wanted,
        "messages_sent": stats.messages_sent,
        "acks": sum(1 for s in stats.samples if s.ack is not None),
        "replies": len(replies),
        "missing_replies": wanted - len(replies),
        "errors": sum(stats.errors.values()),
        "error_kinds": dict(sorted(stats.errors.items())),
        "reply_timeouts": stats.reply_timeouts,
        "stopped_by_total_timeout": stats.stopped_by_timeout,
        "deltas": stats.deltas,
        "delta_mismatches": stats.delta_mismatches,
        "elapsed_s": round(elapsed, 3),
        "replies_per_s": round(len(replies) / elapsed, 2) if elapsed > 0 else None,
        "client_cpu_s": round(_cpu_seconds(), 2),
        "create_ms": summary_ms(stats.create_times),
        "connect_ms": summary_ms(stats.connect_times),
        "ack_ms": summary_ms([s.ack for s in stats.samples if s.ack is not None]),
        "first_delta_ms": summary_ms(
            [s.first_delta for s in stats.samples if s.first_delta is not None]
        ),
        "reply_ms": summary_ms(replies),
    }


def write_trace(path: str, stats: Stats) -> None:
    """One JSON line per message: who sent it when (s after the start) and its timings (ms)."""
    origin = stats.run_started or 0.0

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    with open(path, "w", encoding="utf-8") as out:
        for s in sorted(stats.samples, key=lambda s: s.sent_at):
            row = {
                "session": s.session,
                "n": s.number,
                "message_id": s.message_id,
                "sent_s": round(s.sent_at - origin, 3),
                "ack_ms": ms(s.ack),
                "first_delta_ms": ms(s.first_delta),
                "reply_ms": ms(s.reply),
            }
            out.write(json.dumps(row) + "\n")


def print_report(res: dict[str, Any]) -> None:
    """The human-readable summary."""

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.1f}"

    print(f"target           {res['url']}")
    print(
        f"sessions         {res['sessions']} wanted, {res['sessions_created']} created, "
        f"{res['sessions_connected']} connected"
    )
    print(
        f"messages         {res['messages_expected']} expected, {res['messages_sent']} sent, "
        f"{res['acks']} acked, {res['replies']} replied ({res['missing_replies']} missing)"
    )
    kinds = ", ".join(f"{k}={v}" for k, v in res["error_kinds"].items()) or "none"
    print(f"errors           {res['errors']} ({kinds})")
    total = " (stopped by --timeout)" if res["stopped_by_total_timeout"] else ""
    print(f"timeouts         {res['reply_timeouts']} reply timeouts{total}")
    print(
        f"deltas           {res['deltas']} received, {res['delta_mismatches']} replies mismatched"
    )
    print(f"elapsed          {res['elapsed_s']:.2f} s")
    rate = res["replies_per_s"]
    print(f"throughput       {'-' if rate is None else f'{rate:.2f}'} replies/s")
    print(f"client CPU       {res['client_cpu_s']:.2f} s")
    print(f"{'latency (ms)':<17}{'n':>6}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}")
    for label, key in (
        ("session create", "create_ms"),
        ("socket connect", "connect_ms"),
        ("send -> ack", "ack_ms"),
        ("send -> 1st delta", "first_delta_ms"),
        ("send -> reply", "reply_ms"),
    ):
        row = res[key]
        print(
            f"{label:<17}{row['n']:>6}{cell(row['p50']):>10}{cell(row['p95']):>10}"
            f"{cell(row['p99']):>10}{cell(row['max']):>10}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Concurrent chat conversations against a running chatsite.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the site")
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions")
    parser.add_argument("--messages", type=int, default=5, help="messages per session")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on the whole run (s)")
    parser.add_argument("--reply-timeout", type=float, default=120.0, help="bound on one reply (s)")
    parser.add_argument(
        "--create-concurrency", type=int, default=10, help="session creations in flight"
    )
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    parser.add_argument("--trace", metavar="FILE", help="write per-message timings (JSON lines)")
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.messages < 1 or args.create_concurrency < 1:
        parser.error("--sessions, --messages and --create-concurrency must be at least 1")
    if args.timeout <= 0 or args.reply_timeout <= 0:
        parser.error("timeouts must be positive")
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    stats = Stats(sessions_wanted=args.sessions, messages_wanted=args.messages)
    try:
        await asyncio.wait_for(run(args, stats), args.timeout)
    except TimeoutError:
        stats.stopped_by_timeout = True
    if args.trace:
        write_trace(args.trace, stats)
    return result(args, stats)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = asyncio.run(amain(args))
    print_report(res)
    if args.json:
        print(json.dumps(res, sort_keys=True))
    return 0 if res["missing_replies"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
