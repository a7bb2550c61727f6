#!/usr/bin/env python3
"""A stand-in for an OpenAI-compatible model server: fixed-pace token streams, cheaply.

``POST /v1/chat/completions`` (any path ending in ``/chat/completions``) with
``"stream": true`` answers HTTP/1.1 200 with ``Transfer-Encoding: chunked`` server-sent
events, one per token::

    data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}

then ``data: [DONE]``. It streams ``--tokens`` tokens (default 40) ``--token-delay``
seconds apart (default 0.025). **The first token also comes one token-delay after the
request**, so the model's time to first token is one token-delay, and a whole reply takes
tokens times token-delay. Tokens follow a fixed schedule from the request's arrival (the
n-th token n token-delays after it), so a busy loop does not stretch a reply. Without
``"stream": true`` it answers one JSON completion after the same time. Connections are kept alive.

It is plain asyncio streams (uvloop when installed), one coroutine per stream, and no
framework, so one core holds 500+ concurrent streams: about 20 µs of CPU per token.
While it streams, it also reads the request's connection, so a client that closes
mid-stream (EOF or reset) is seen at once: the stream stops and the request is recorded
as ``client_closed`` with the time it saw the close.

Other endpoints:

* ``GET /stats``: ``{"requests", "completed", "client_closed", "failed", "in_flight",
  "max_in_flight", "tokens_sent", "tokens", "token_delay"}``;
* ``POST /reset``: zero the counters and forget the records (``max_in_flight`` restarts
  from the streams in flight now);
* ``GET /requests?since=<id>``: every record with a larger id, finished or not:
  ``{"id", "prompt" (the last user message, cut to 200 characters), "messages" (how many
  prompt messages), "stream", "opened", "first_token", "ended" (time.time() on this
  machine), "outcome" ("in_flight", "completed", "client_closed" or "failed"),
  "tokens_sent"}``.

``time.time()`` stamps let another process on the same machine compare its own events with
a close (the Stop measurement of chat_compare.py does). In-process, ``StandinModel``
records ``time.monotonic()`` too (``Record.ended_mono``), and ``wait_until()`` waits for a
condition on the records.

    .venv/bin/python bench/standin_model.py --port 8190 --tokens 40 --token-delay 0.025

It listens on the loopback only and runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
MAX_RECORDS = 200_000
TOKEN = "tok "
DONE_EVENT = b"data: [DONE]\n\n"


def sse_chunk(event: bytes) -> bytes:
    """One HTTP chunk holding one server-sent event."""
    return b"%x\r\n%s\r\n" % (len(event), event)


def token_event(text: str) -> bytes:
    body = json.dumps(
        {"choices": [{"index": 0, "delta": {"content": text}}]}, separators=(",", ":")
    )
    return b"data: " + body.encode() + b"\n\n"


@dataclass
class Record:
    """One completion request."""

    id: int
    prompt: str
    messages: int
    stream: bool
    opened: float  # time.time()
    opened_mono: float  # time.monotonic()
    first_token: float | None = None
    ended: float | None = None
    ended_mono: float | None = None
    outcome: str = "in_flight"
    tokens_sent: int = 0

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["opened_mono"], data["ended_mono"]
        return data


class _ClientClosed(Exception):
    """The client closed (or reset) the connection."""


class _Connection:
    """A buffered reader over one connection that can also watch it for EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    async def fill(self) -> bool:
        """Read more bytes into the buffer; False at EOF or on a reset."""
        try:
            data = await self.reader.read(65536)
        except ConnectionError:
            return False
        if not data:
            return False
        self.buf += data
        return True

    async def head(self) -> bytes | None:
        """The next request head (without the blank line), or None at EOF."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > MAX_HEAD or not await self.fill():
                return None

    async def body(self, length: int) -> bytes | None:
        while len(self.buf) < length:
            if not await self.fill():
                return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return body

    async def watch_eof(self) -> None:
        """Return when the client closes; anything it sends meanwhile stays buffered."""
        while await self.fill():
            if len(self.buf) > MAX_HEAD + MAX_BODY:
                return


class StandinModel:
    """The server; start() it in a running loop, close() it when done."""

    def __init__(
        self,
        *,
        tokens: int = 40,
        token_delay: float = 0.025,
        host: str = "127.0.0.1",
        port: int = 0,
        on_change: Callable[[Record], None] | None = None,
    ) -> None:
        self.tokens = tokens
        self.token_delay = token_delay
        self.host = host
        self.port = port
        self.on_change = on_change
        self.server: asyncio.Server | None = None
        self.records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._next_id = 1
        self._changed: asyncio.Event | None = None
        self._open: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}  # open connections
        self._token_chunk = sse_chunk(token_event(TOKEN))
        self.reset()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> StandinModel:
        self._changed = asyncio.Event()
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, backlog=4096, limit=MAX_HEAD
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            # Cutting the connections ends their handlers; cancelling them would make
            # Python 3.11's streams log the CancelledError as an error.
            for writer in list(self._open.values()):
                writer.transport.abort()
            if self._open:
                await asyncio.wait(list(self._open), timeout=5)
            for task in list(self._open):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)
            self.server = None

    @property
    def url(self) -> str:
        """The base URL an OpenAI client is given (…/v1)."""
        return f"http://{self.host}:{self.port}/v1"

    # --- counters and records -----------------------------------------------------------

    def reset(self) -> None:
        """Zero the counters and forget the records; in-flight streams still finish."""
        in_flight = sum(1 for r in self.records if r.outcome == "in_flight")
        self.counts = {
            "requests": 0,
            "completed": 0,
            "client_closed": 0,
            "failed": 0,
            "tokens_sent": 0,
        }
        self.in_flight = in_flight
        self.max_in_flight = in_flight
        self.records.clear()

    def stats(self) -> dict[str, Any]:
        return {
            **self.counts,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "tokens": self.tokens,
            "token_delay": self.token_delay,
        }

    def since(self, record_id: int) -> list[Record]:
        return [r for r in self.records if r.id > record_id]

    async def wait_until(self, condition: Callable[[], bool], seconds: float) -> None:
        """Wait (TimeoutError after `seconds`) until condition() holds; checked per change."""
        assert self._changed is not None, "start() first"
        async with asyncio.timeout(seconds):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def _changed_now(self, record: Record) -> None:
        if self._changed is not None:
            self._changed.set()
        if self.on_change is not None:
            self.on_change(record)

    def _begin(self, prompt: str, messages: int, stream: bool) -> Record:
        record = Record(
            id=self._next_id,
            prompt=prompt,
            messages=messages,
            stream=stream,
            opened=time.time(),
            opened_mono=time.monotonic(),
        )
        self._next_id += 1
        self.records.append(record)
        self.counts["requests"] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self._changed_now(record)
        return record

    def _end(self, record: Record, outcome: str) -> None:
        if record.outcome != "in_flight":
            return
        record.ended_mono = time.monotonic()
        record.ended = time.time()
        record.outcome = outcome
        self.counts[outcome] += 1
        self.in_flight -= 1
        self._changed_now(record)

    # --- HTTP ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        try:
            while True:
                head = await conn.head()
                if head is None:
                    return
                keep_alive = await self._request(conn, head)
                if not keep_alive:
                    return
        except (ConnectionError, _ClientClosed):
            pass
        finally:
            self._open.pop(task, None)
            writer.close()

    async def _request(self, conn: _Connection, head: bytes) -> bool:
        """Answer one request; whether the connection may carry another."""
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self._respond(conn, 400, {"error": "bad request line"}, keep_alive=False)
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            self._respond(conn, 501, {"error": "send a Content-Length body"}, keep_alive=False)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._respond(conn, 400, {"error": "bad Content-Length"}, keep_alive=False)
            return False
        body = await conn.body(length)
        if body is None:
            return False
        parts = urlsplit(target)
        path = parts.path
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._completion(conn, body, keep_alive)
        if method == "GET" and path == "/stats":
            self._respond(conn, 200, self.stats(), keep_alive=keep_alive)
        elif method == "POST" and path == "/reset":
            self.reset()
            self._respond(conn, 200, self.stats(), keep_alive=keep_alive)
        elif method == "GET" and path == "/requests":
            since = int(parse_qs(parts.query).get("since", ["0"])[0])
            payload = {"requests": [r.public() for r in self.since(since)]}
            self._respond(conn, 200, payload, keep_alive=keep_alive)
        else:
            self._respond(conn, 404, {"error": f"no {method} {path}"}, keep_alive=keep_alive)
        return keep_alive

    def _respond(self, conn: _Connection, status: int, payload: Any, *, keep_alive: bool) -> None:
        body = json.dumps(payload).encode()
        conn.writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: %s\r\n\r\n%s"
            % (
                status,
                b"OK" if status == 200 else b"Error",
                len(body),
                b"keep-alive" if keep_alive else b"close",
                body,
            )
        )

    async def _completion(self, conn: _Connection, body: bytes, keep_alive: bool) -> bool:
        try:
            request = json.loads(body)
            messages = request.get("messages") or []
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            prompt = str(users[-1].get("content", ""))[:200] if users else ""
            stream = bool(request.get("stream"))
        except (ValueError, AttributeError, TypeError):
            self._respond(conn, 400, {"error": {"message": "bad JSON"}}, keep_alive=keep_alive)
            return keep_alive
        record = self._begin(prompt, len(messages), stream)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        closed = False

        def client_gone(_: asyncio.Future[None]) -> None:
            nonlocal closed
            if record.outcome == "in_flight":
                closed = True
                self._end(record, "client_closed")
                task.cancel()

        watcher = loop.create_task(conn.watch_eof())
        watcher.add_done_callback(client_gone)
        try:
            if stream:
                await self._stream(conn, record, loop.time())
            else:
                await asyncio.sleep(self.tokens * self.token_delay)
                text = TOKEN * self.tokens
                record.tokens_sent = self.tokens
                self.counts["tokens_sent"] += self.tokens
                choice = {"index": 0, "message": {"role": "assistant", "content": text}}
                self._respond(conn, 200, {"choices": [choice]}, keep_alive=keep_alive)
            self._end(record, "completed")
        except asyncio.CancelledError:
            if not closed:
                self._end(record, "failed")
                raise
            task.uncancel()
            raise _ClientClosed from None
        except Exception:
            self._end(record, "failed")
            raise
        finally:
            watcher.remove_done_callback(client_gone)
            watcher.cancel()
        await asyncio.wait([watcher])  # its read must end before the next request's read
        await conn.writer.drain()
        return keep_alive

    async def _stream(self, conn: _Connection, record: Record, start: float) -> None:
        writer = conn.writer
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        chunk = self._token_chunk
        for i in range(1, self.tokens + 1):
            delay = start + i * self.token_delay - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(chunk)
            if record.first_token is None:
                record.first_token = time.time()
            record.tokens_sent += 1
            self.counts["tokens_sent"] += 1
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
        writer.write(sse_chunk(DONE_EVENT) + b"0\r\n\r\n")


async def main_async(args: argparse.Namespace) -> None:
    model = await StandinModel(
        tokens=args.tokens, token_delay=args.token_delay, host=args.host, port=args.port
    ).start()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    print(
        f"stand-in model listening on {model.url} ({args.tokens} tokens, "
        f"{args.token_delay} s apart, first token after {args.token_delay} s)",
        flush=True,
    )
    with contextlib.suppress(asyncio.CancelledError):
        await stop
    print(f"stand-in model stopping: {json.dumps(model.stats())}", flush=True)
    await model.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--tokens", type=int, default=40, help="tokens per reply")
    parser.add_argument(
        "--token-delay", type=float, default=0.025, help="seconds between tokens (and to the first)"
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("standin_model.py is a benchmark tool: it listens on the loopback only")
    if args.tokens < 1 or args.token_delay < 0:
        parser.error("--tokens must be at least 1 and --token-delay not negative")
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
