#!/usr/bin/env python3
"""The peer for the assistant chat: the plain design, an async worker reading a Redis Stream.

It speaks our chat protocol (docs/protocol.md, section 5) as far as ``chat_load.py`` and
``chat_compare.py`` need, so the same load generator drives both:

* ``POST /api/chat/sessions`` with ``{"name": ...}`` answers 201 with ``{"token", "name",
  "created_at", "expires_at", "messages": []}`` (the session is a Redis key with a TTL);
* ``/ws/chat/<token>`` sends ``{"type": "history", "messages": []}`` on connect, answers
  ``ping`` with ``pong``, and takes ``message`` frames: it assigns the user message's and
  the reply's ids (one ``INCRBY`` in Redis), ``XADD``s the job to a Redis stream, then
  sends the ``ack`` with the user message;
* the worker reads the stream with ``XREADGROUP`` (one consumer group), runs every job as
  an asyncio task (up to ``--max-jobs`` at once), streams the reply from the inference API
  over HTTP/1.1 (a small non-blocking SSE client on asyncio streams, keep-alive pooled),
  and ``PUBLISH``es ``delta`` frames, coalesced like ours (the first chunk at once, then at
  most one per ``--delta-interval`` s, plus a last one) and the final ``reply`` frame to
  the session's channel; it ``XACK``s the job when the reply is sent. The web process
  subscribes to a session's channel while it has a socket open on it, and forwards the
  frames as they are.

Order: a conversation's jobs run one after the other in stream order (a queue per
conversation in the worker), and each prompt holds the conversation so far (the last 50
messages, kept in the worker's memory): the system prompt, earlier questions and replies,
then the question.

**Process layout.** ``--role all`` (the default) runs the web server in this process and
starts the worker as a second process (killed with this one): the same split as the site's
uvicorn web process and Celery worker, so each side has a process on each of the 2 cores,
the web process never waits on generation, and the stream between them is the reason a
Redis Stream is there at all. ``--role web`` and ``--role worker`` run one part each.
Both use uvloop when it is installed (``--no-uvloop`` to leave it).

Left out, as the load does not need them: a database (nothing is stored beyond Redis),
``history`` contents, ``?after=``, repeated ``client_id`` detection, ``message`` frames to
a session's other sockets, ``retry``, ``stop``, rate limits, Origin checks, automatic
retries of a failed inference call (the reply fails with an ``inference_failed`` error
frame), and re-claiming a dead worker's pending jobs.

    .venv/bin/python bench/chat_peer.py --port 8193 --redis redis://127.0.0.1:6493/0 \\
        --inference-url http://127.0.0.1:8190/v1

It listens on the loopback only and runs until SIGINT/SIGTERM or ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import secrets
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SESSION_TTL = 3600
REDIS_CONNECTIONS = 32
CONTEXT_MESSAGES = 50
MAX_POST_BODY = 65536
SYSTEM_PROMPT = "You are a helpful, concise assistant."
HISTORY = json.dumps({"type": "history", "messages": []})
PONG = json.dumps({"type": "pong"})
WS_PREFIX = "/ws/chat/"
logger = logging.getLogger("chat_peer")


def redis_client(url: str) -> aioredis.Redis:
    """A client whose commands wait for one of REDIS_CONNECTIONS connections.

    redis-py's default pool raises "Too many connections" past 100 commands in flight,
    which 500 sockets sending at once reach.
    """
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=REDIS_CONNECTIONS)
    return aioredis.Redis.from_pool(pool)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def error_frame(code: str, message: str, **extra: Any) -> str:
    return json.dumps({"type": "error", "code": code, "message": message, **extra})


@dataclass
class Keys:
    """The Redis names of one peer deployment (a prefix keeps tests apart)."""

    prefix: str = "peer"

    @property
    def ids(self) -> str:
        return f"{self.prefix}:ids"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def group(self) -> str:
        return f"{self.prefix}:workers"

    def session(self, token: str) -> str:
        return f"{self.prefix}:session:{token}"

    def channel(self, token: str) -> str:
        return f"{self.prefix}:chat:{token}"


# --- the inference client: HTTP/1.1 + server-sent events on asyncio streams --------------


class InferenceError(Exception):
    """The inference call failed (status, transport or a broken stream)."""


class InferenceClient:
    """POST {url}/chat/completions with stream: true; yields each delta's content."""

    def __init__(self, base_url: str, *, model: str = "standin", timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the inference URL must be http://host:port/...")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = parts.path.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def close(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer = self.idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        async with asyncio.timeout(self.timeout):
            return await asyncio.open_connection(self.host, self.port)

    async def _read(self, reader: asyncio.StreamReader, size: int | None = None) -> bytes:
        """A line (size None) or exactly size bytes, within the read timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                if size is None:
                    return await reader.readuntil(b"\n")
                return await reader.readexactly(size)
        except TimeoutError as exc:
            raise InferenceError("The inference API timed out.") from exc
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            raise InferenceError("The inference stream broke off.") from exc

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        body = json.dumps(
            {"model": self.model, "messages": messages, "stream": True, "max_tokens": 512}
        ).encode()
        try:
            reader, writer = await self._connection()
        except (OSError, TimeoutError) as exc:
            raise InferenceError("The inference API is unreachable.") from exc
        reusable = False
        try:
            writer.write(
                b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                % (self.path.encode(), self.host.encode(), self.port, len(body), body)
            )
            status_line = await self._read(reader)
            headers: dict[str, str] = {}
            while (line := await self._read(reader)) not in (b"\r\n", b"\n"):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            status = int(status_line.split()[1])
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            if status != 200:
                raise InferenceError(f"The inference API failed ({status}).")
            if not chunked:
                raise InferenceError("The inference API did not stream in chunks.")
            pending = b""
            while True:
                size = int((await self._read(reader)).split(b";")[0], 16)
                if size == 0:
                    await self._read(reader)  # the blank line after the last chunk
                    break
                pending += (await self._read(reader, size + 2))[:-2]
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        continue
                    try:
                        content = json.loads(data)["choices"][0]["delta"].get("content")
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        raise InferenceError("The inference API sent a malformed chunk.") from None
                    if content:
                        yield content
            reusable = headers.get("connection", "").lower() != "close"
        except (ValueError, IndexError) as exc:
            raise InferenceError("The inference API sent a malformed response.") from exc
        finally:
            if reusable:
                self.idle.append((reader, writer))
            else:
                writer.close()


# --- the worker --------------------------------------------------------------------------


@dataclass
class Conversation:
    """A session as the worker sees it: its queued jobs and its messages so far."""

    queue: deque[tuple[bytes, dict[str, Any]]] = field(default_factory=deque)
    history: list[dict[str, str]] = field(default_factory=list)
    running: bool = False


class Worker:
    """XREADGROUP jobs, answer each as a task (a conversation's in order), PUBLISH frames."""

    def __init__(
        self,
        redis_url: str,
        inference_url: str,
        *,
        keys: Keys | None = None,
        consumer: str = "worker-1",
        delta_interval: float = 0.05,
        max_jobs: int = 5000,
        model: str = "standin",
    ) -> None:
        self.redis = redis_client(redis_url)
        self.keys = keys or Keys()
        self.consumer = consumer
        self.client = InferenceClient(inference_url, model=model)
        self.delta_interval = delta_interval
        self.slots = asyncio.Semaphore(max_jobs)
        self.conversations: dict[str, Conversation] = {}
        self.outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.replies = 0
        self.failures = 0

    async def start(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.jobs, self.keys.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()
        await self.redis.aclose()

    async def run(self) -> None:
        """Read jobs until cancelled."""
        self._spawn(self._publisher())
        while True:
            batches = await self.redis.xreadgroup(
                self.keys.group, self.consumer, {self.keys.jobs: ">"}, count=256, block=1000
            )
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    await self.slots.acquire()
                    self._dispatch(entry_id, json.loads(fields[b"job"]))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _dispatch(self, entry_id: bytes, job: dict[str, Any]) -> None:
        conversation = self.conversations.setdefault(job["session"], Conversation())
        conversation.queue.append((entry_id, job))
        if not conversation.running:
            conversation.running = True
            self._spawn(self._drain(conversation))

    async def _drain(self, conversation: Conversation) -> None:
        """Answer the conversation's jobs one after the other, in stream order."""
        try:
            while conversation.queue:
                entry_id, job = conversation.queue.popleft()
                try:
                    await self._answer(conversation, job)
                    await self.redis.xack(self.keys.jobs, self.keys.group, entry_id)
                finally:
                    self.slots.release()
        finally:
            conversation.running = False

    def _publish(self, token: str, frame: dict[str, Any]) -> None:
        self.outbox.put_nowait((self.keys.channel(token), json.dumps(frame)))

    async def _publisher(self) -> None:
        """PUBLISH the frames in the order they were made, pipelining what has piled up."""
        while True:
            batch = [await self.outbox.get()]
            while not self.outbox.empty() and len(batch) < 1000:
                batch.append(self.outbox.get_nowait())
            if len(batch) == 1:
                await self.redis.publish(*batch[0])
                continue
            async with self.redis.pipeline(transaction=False) as pipe:
                for channel, data in batch:
                    pipe.publish(channel, data)
                await pipe.execute()

    async def _answer(self, conversation: Conversation, job: dict[str, Any]) -> None:
        token, reply_id, user_id = job["session"], job["reply_id"], job["user_id"]
        question = {"role": "user", "content": job["text"]}
        prompt = [
            {"role": "system", "content": SYSTEM_PROMPT},
            *conversation.history[-(CONTEXT_MESSAGES - 1) :],
            question,
        ]
        loop = asyncio.get_running_loop()
        parts: list[str] = []
        pending: list[str] = []
        offset = 0
        last_flush = 0.0  # the first chunk goes out at once, later ones are coalesced

        def flush() -> None:
            nonlocal offset, last_flush
            if pending:
                text = "".join(pending)
                self._publish(
                    token,
                    {"type": "delta", "message_id": reply_id, "reply_to": user_id,
                     "offset": offset, "text": text},
                )  # fmt: skip
                offset += len(text)
                pending.clear()
            last_flush = loop.time()

        try:
            async with contextlib.aclosing(self.client.stream(prompt)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
                    pending.append(chunk)
                    if loop.time() - last_flush >= self.delta_interval:
                        flush()
            flush()
            text = "".join(parts)
            if not text.strip():
                raise InferenceError("The model returned an empty reply.")
        except InferenceError as exc:
            self.failures += 1
            self._publish(
                token,
                {"type": "error", "code": "inference_failed",
                 "message": f"The assistant could not answer: {exc}",
                 "message_id": reply_id, "reply_to": user_id},
            )  # fmt: skip
            conversation.history.append(question)
            return
        self.replies += 1
        reply = {
            "id": reply_id,
            "role": "assistant",
            "text": text,
            "status": "done",
            "created_at": job["created_at"],
            "reply_to": user_id,
            "client_id": None,
        }
        self._publish(token, {"type": "reply", "message": reply})
        conversation.history += [question, {"role": "assistant", "content": text}]
        del conversation.history[:-CONTEXT_MESSAGES]


# --- the web server ----------------------------------------------------------------------


class ApiConnection(ServerConnection):
    """Takes a POST's body off the wire itself: websockets' handshake parser reads none.

    The body is kept in ``post_body`` and the request goes on to the parser without its
    Content-Length, so ``process_request`` sees the POST and can answer it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.post_body: bytes | None = None
        self._head = bytearray()
        self._through = False

    def data_received(self, data: bytes) -> None:
        if self._through:
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) <= MAX_POST_BODY:
            return
        if end < 0 or not self._head.startswith(b"POST "):
            self._pass(bytes(self._head))
            return
        lines = bytes(self._head[:end]).split(b"\r\n")
        length = 0
        kept = []
        for line in lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip()) if value.strip().isdigit() else MAX_POST_BODY + 1
            else:
                kept.append(line)
        if length > MAX_POST_BODY:
            self._pass(bytes(self._head))  # the parser refuses it
            return
        if len(self._head) < end + 4 + length:
            return
        self.post_body = bytes(self._head[end + 4 : end + 4 + length])
        self._pass(b"\r\n".join(kept) + b"\r\n\r\n" + bytes(self._head[end + 4 + length :]))

    def _pass(self, data: bytes) -> None:
        self._through = True
        self._head.clear()
        super().data_received(data)


def json_response(status: int, reason: str, payload: Any) -> Response:
    body = json.dumps(payload).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status, reason, headers, body)


class Web:
    """Sessions over HTTP, sockets over WebSocket, jobs to the stream, frames from pub/sub."""

    def __init__(self, redis_url: str, *, keys: Keys | None = None) -> None:
        self.redis = redis_client(redis_url)
        self.keys = keys or Keys()
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.sockets: dict[str, set[ServerConnection]] = {}
        self.lock = asyncio.Lock()  # subscribe/unsubscribe one at a time
        self.reader: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if request.method == "GET" and path.startswith(WS_PREFIX):
            return None
        if path != "/api/chat/sessions":
            return json_response(404, "Not Found", {"error": {"code": "not_found"}})
        if request.method != "POST":
            return json_response(405, "Method Not Allowed", {"error": {"code": "bad_method"}})
        try:
            data = json.loads(getattr(ws, "post_body", None) or b"{}")
            name = data["name"].strip()
        except (ValueError, KeyError, TypeError, AttributeError):
            return json_response(400, "Bad Request", {"error": {"code": "invalid_name"}})
        if not name or len(name) > 80:
            return json_response(400, "Bad Request", {"error": {"code": "invalid_name"}})
        token = secrets.token_urlsafe(32)
        await self.redis.set(self.keys.session(token), name, ex=SESSION_TTL)
        created = datetime.now(UTC)
        session = {
            "token": token,
            "name": name,
            "created_at": created.isoformat(),
            "expires_at": (created + timedelta(seconds=SESSION_TTL)).isoformat(),
            "messages": [],
        }
        return json_response(201, "Created", session)

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request else ""
        token = path[len(WS_PREFIX) :]
        if not token or "/" in token:
            await ws.send(error_frame("not_found", "No socket endpoint at this path."))
            await ws.close(4404)
            return
        if not await self.redis.exists(self.keys.session(token)):
            await ws.send(error_frame("session_not_found", "Session unknown or expired."))
            await ws.close(4401)
            return
        await self._join(token, ws)
        try:
            await ws.send(HISTORY)
            async for raw in ws:
                await self._frame(token, ws, raw)
        except ConnectionClosed:
            pass
        finally:
            await self._leave(token, ws)

    async def _frame(self, token: str, ws: ServerConnection, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            await ws.send(error_frame("invalid_json", "The frame is not valid JSON."))
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ping":
            await ws.send(PONG)
        elif kind == "message":
            await self._message(token, ws, frame)
        else:
            await ws.send(
                error_frame("unknown_type", f"Unknown frame type {kind!r}.", field="type")
            )

    async def _message(self, token: str, ws: ServerConnection, frame: dict[str, Any]) -> None:
        text, client_id = frame.get("text"), frame.get("client_id")
        extra = {"client_id": client_id} if isinstance(client_id, str) else {}
        if not isinstance(text, str) or not text.strip():
            await ws.send(error_frame("invalid_text", "The message is empty.", **extra))
            return
        reply_id = await self.redis.incrby(self.keys.ids, 2)
        user_id = reply_id - 1
        created = now_iso()
        job = {"session": token, "user_id": user_id, "reply_id": reply_id, "text": text,
               "created_at": created}  # fmt: skip
        await self.redis.xadd(self.keys.jobs, {"job": json.dumps(job)})
        message = {
            "id": user_id,
            "role": "user",
            "text": text,
            "status": "done",
            "created_at": created,
            "reply_to": None,
            "client_id": client_id if isinstance(client_id, str) else None,
        }
        await ws.send(json.dumps({"type": "ack", "client_id": message["client_id"],
                                  "message": message}))  # fmt: skip

    async def _join(self, token: str, ws: ServerConnection) -> None:
        async with self.lock:
            sockets = self.sockets.setdefault(token, set())
            sockets.add(ws)
            if len(sockets) == 1:
                await self.pubsub.subscribe(self.keys.channel(token))
                if self.reader is None:
                    self.reader = asyncio.create_task(self._read_loop())

    async def _leave(self, token: str, ws: ServerConnection) -> None:
        async with self.lock:
            sockets = self.sockets.get(token)
            if sockets is None:
                return
            sockets.discard(ws)
            if not sockets:
                del self.sockets[token]
                await self.pubsub.unsubscribe(self.keys.channel(token))

    async def _read_loop(self) -> None:
        """Forward every published frame to the sockets open on its session."""
        skip = len(self.keys.channel(""))
        while True:
            if not self.pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            sockets = self.sockets.get(message["channel"][skip:].decode())
            if sockets:
                broadcast(sockets, message["data"].decode())


# --- processes ---------------------------------------------------------------------------


def die_with_parent() -> None:
    """In the worker child: Linux sends it SIGTERM when the web process dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def run_until_signal(max_seconds: float) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(stop, timeout=max_seconds)


async def run_worker(args: argparse.Namespace) -> None:
    worker = Worker(
        args.redis,
        args.inference_url,
        keys=Keys(args.prefix),
        delta_interval=args.delta_interval,
        max_jobs=args.max_jobs,
        model=args.model,
    )
    await worker.start()
    reading = asyncio.create_task(worker.run())
    print("peer worker ready", flush=True)
    try:
        await run_until_signal(args.max_seconds)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        print(f"peer worker stopping: {worker.replies} replies, {worker.failures} failed",
              flush=True)  # fmt: skip
        await worker.close()


async def start_worker_process(
    args: argparse.Namespace,
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    """The worker as a child process, once it said it is ready, and its output's relay."""
    cmd = [sys.executable, __file__, "--role", "worker", "--redis", args.redis,
           "--inference-url", args.inference_url, "--prefix", args.prefix,
           "--delta-interval", str(args.delta_interval), "--max-jobs", str(args.max_jobs),
           "--model", args.model, "--max-seconds", str(args.max_seconds)]  # fmt: skip
    if not args.uvloop:
        cmd.append("--no-uvloop")
    child = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent
    )
    assert child.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = await child.stdout.readline()
            if not line:
                raise RuntimeError("the peer worker exited before it was ready")
            sys.stdout.write(line.decode())
            if line.startswith(b"peer worker ready"):
                break

    async def forward() -> None:
        assert child.stdout is not None
        while line := await child.stdout.readline():
            sys.stdout.write(line.decode())
            sys.stdout.flush()

    return child, asyncio.create_task(forward())


async def run_web(args: argparse.Namespace) -> None:
    child, relay = await start_worker_process(args) if args.role == "all" else (None, None)
    web = Web(args.redis, keys=Keys(args.prefix))
    try:
        await web.redis.ping()
        async with serve(
            web.handler, args.host, args.port, process_request=web.process_request,
            create_connection=ApiConnection, compression=None, max_size=2**20,
            ping_interval=20, ping_timeout=20, backlog=4096,
        ):  # fmt: skip
            print(f"peer ready on http://{args.host}:{args.port}", flush=True)
            await run_until_signal(args.max_seconds)
    finally:
        await web.close()
        if child is not None and child.returncode is None:
            child.terminate()
            try:
                async with asyncio.timeout(10):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()
        if relay is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(relay, 5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("all", "web", "worker"), default="all")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8193)
    parser.add_argument("--redis", default="redis://127.0.0.1:6493/0")
    parser.add_argument("--inference-url", default="http://127.0.0.1:8190/v1")
    parser.add_argument("--model", default="standin")
    parser.add_argument("--prefix", default="peer", help="prefix of the Redis keys")
    parser.add_argument("--delta-interval", type=float, default=0.05)
    parser.add_argument("--max-jobs", type=int, default=5000, help="replies generated at once")
    parser.add_argument("--max-seconds", type=float, default=86400.0)
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("chat_peer.py is a benchmark tool: it listens on the loopback only")
    logging.basicConfig(level=logging.WARNING)
    run = run_worker(args) if args.role == "worker" else run_web(args)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(run)
            return
    asyncio.run(run)


if __name__ == "__main__":
    main()
