"""The JSON WebSocket base shared by every socket: limits, parsing, dispatch, errors."""

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from chatsite.api import json_loads_strict
from chatsite.errors import AppError, error_event
from chatsite.fanout import PREPARED_FRAME, LiveEvent, LiveFeed

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]

# The scope key under which ServerSendMiddleware keeps the server's own send.
SERVER_SEND = "chatsite.server_send"
CLOSE_TOO_SLOW = 4408
TOO_SLOW_REASON = "This socket fell too far behind; reconnect to resume."


class ServerSendMiddleware:
    """Keep the server's send in the scope, so live frames can skip the send wrappers.

    The session middleware wraps send to save sessions on HTTP responses; on a socket's
    per-frame path that wrapper only costs time.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        """Pass the connection on with the server's send in its scope."""
        return await self.inner({**scope, SERVER_SEND: send}, receive, send)


class CloseSocket(Exception):
    """Raised by a handler to close the socket with an application close code."""

    def __init__(self, code: int, error_code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.error_code = error_code
        self.reason = reason


class JsonSocketConsumer(AsyncWebsocketConsumer):
    """Parse JSON text frames, dispatch on "type", answer bad input with an error frame."""

    max_frame_bytes: int = 32 * 1024

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' consumer loop, with one long-lived reader per message source.

        Channels waits on the client and the channel layer with asyncio.wait and starts a
        new task for every message, which costs more than a device's frame is worth on the
        publish path. Here each source has its own reader loop; a lock keeps Channels'
        guarantee that handlers run one at a time, in the order each source delivers.
        """
        self.scope = scope
        self.base_send = send
        self.streams_sent: dict[tuple[int, int], int] = {}
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            sources.append(self.channel_receive)
        lock = asyncio.Lock()
        readers = [asyncio.ensure_future(self._read_loop(source, lock)) for source in sources]
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for reader in done:
                reader.result()  # StopConsumer ends the socket; anything else propagates
        except StopConsumer:
            pass
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def _read_loop(
        self, source: Callable[[], Awaitable[dict[str, Any]]], lock: asyncio.Lock
    ) -> None:
        while True:
            message = await source()
            async with lock:
                await self.dispatch(message)

    def handlers(self) -> dict[str, Handler]:
        """Map each accepted frame type to its coroutine."""
        return {"ping": self.on_ping}

    def query_param(self, name: str) -> str | None:
        """One query-string parameter of the socket URL, or None."""
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[0] if values else None

    async def send_json(self, payload: dict[str, Any]) -> None:
        """Send one JSON text frame."""
        await self.send(text_data=json.dumps(payload))

    async def send_error(self, err: AppError, **extra: Any) -> None:
        """Send an error frame in the one error shape."""
        await self.send_json({**error_event(err), **extra})

    def parse_frame(self, text_data: str | None) -> Any:
        """The frame's JSON value, after the edge checks (binary, size, strict JSON)."""
        if text_data is None:
            raise AppError("binary_not_supported", "Send JSON text frames, not binary.")
        if len(text_data) > self.max_frame_bytes or (
            len(text_data.encode()) > self.max_frame_bytes
        ):
            raise AppError(
                "frame_too_large", f"Frames are limited to {self.max_frame_bytes} bytes."
            )
        try:
            return json_loads_strict(text_data)
        except ValueError as exc:
            raise AppError("invalid_json", "The frame is not valid JSON.") from exc

    async def dispatch_frame(self, frame: Any) -> None:
        """Hand a typed JSON object to the handler of its "type"."""
        if not isinstance(frame, dict):
            raise AppError("invalid_message", "A frame must be a JSON object.")
        kind = frame.get("type")
        if not isinstance(kind, str) or not kind:
            raise AppError("invalid_message", 'A frame needs a "type".', field="type")
        handler = self.handlers().get(kind)
        if handler is None:
            raise AppError("unknown_type", f"Unknown frame type {kind[:40]!r}.", field="type")
        await handler(frame)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Validate one frame at the edge and dispatch it; errors answer on the socket."""
        try:
            await self.dispatch_frame(self.parse_frame(text_data))
        except AppError as err:
            await self.send_error(err)
        except CloseSocket as close:
            await self.close_with(close)

    async def close_with(self, close: CloseSocket) -> None:
        """Send the reason as an error frame, then close with the application code.

        daphne drops close reasons (uvicorn keeps them), so the frame is what tells a client why.
        """
        await self.send_error(AppError(close.error_code, close.reason))
        await self.close(code=close.code, reason=close.reason)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        """Answer a ping with a pong (clients use it as a keep-alive)."""
        await self.send_json({"type": "pong"})

    # Messages whose handlers touch the database only through database_sync_to_async (which
    # closes stale connections itself). Channels' dispatch would first run
    # close_old_connections on the one database thread, for every message to every socket:
    # on a fan-out that costs more than the send, and a frame in (a ping) would wait behind
    # every socket's database work. Subclasses add their own.
    no_database_messages: frozenset[str] = frozenset({"socket.frame", "websocket.receive"})

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler directly for no_database_messages; anything else as Channels does."""
        if message["type"] in self.no_database_messages:
            await getattr(self, message["type"].replace(".", "_"))(message)
        else:
            await super().dispatch(message)

    # --- live groups through the process-local fan-out -----------------------------------

    live_feed: LiveFeed | None = None

    async def live_join(self, group: str) -> None:
        """Receive a live group's frames through this process's one subscription to it.

        Events are held until live_start(), as Channels holds group messages until
        connect() returns: history first, then live frames, filtered against it.
        """
        if self.live_feed is None:
            prepared = (self.scope.get("extensions") or {}).get(PREPARED_FRAME) or {}
            self.live_feed = LiveFeed(
                send=self.scope.get(SERVER_SEND) or self.base_send,
                select=self.live_messages,
                limit=settings.SOCKET_LIVE_BACKLOG,
                on_overflow=self.live_overflow_messages,
                write=prepared.get("write"),
            )
        await self.live_feed.join(group)

    def live_start(self) -> None:
        """Start sending live frames: those held since live_join(), then each as it comes."""
        if self.live_feed is not None:
            self.live_feed.start()

    async def live_leave_all(self) -> None:
        """Leave every live group and stop sending (call from disconnect)."""
        if self.live_feed is not None:
            await self.live_feed.leave_all()

    def live_messages(self, event: LiveEvent) -> list[dict[str, Any]]:
        """The send messages of a live event for this socket (override to filter).

        A stream this socket joined mid-way (send_stream_start) skips what it already has.
        """
        if self.streams_sent and event.ids:
            return self._after_resume(event)
        return event.messages

    def live_overflow_messages(self) -> list[dict[str, Any]]:
        """What a socket too far behind gets instead of its backlog: why, then the close."""
        error = error_event(AppError("too_slow", TOO_SLOW_REASON))
        return [
            {"type": "websocket.send", "text": json.dumps(error)},
            {"type": "websocket.close", "code": CLOSE_TOO_SLOW, "reason": TOO_SLOW_REASON},
        ]

    async def socket_frame(self, event: dict[str, Any]) -> None:
        """Relay a pre-serialised group frame, unless this socket is the one that caused it."""
        if event.get("skip") != self.channel_name:
            await self.send(text_data=event["frame"])

    # --- streams joined mid-way (a reply streaming when the socket connects) -------------

    async def send_stream_start(self, delta: dict[str, Any], *, stream: tuple[int, int]) -> None:
        """Send a stream's text so far as a delta at offset 0; live deltas then go on from it.

        `stream` is (message id, attempt). A live event of it has the id
        "<message id>:<attempt>:<start>:<end>", the span of text it adds; what this socket
        already has is dropped or cut off, so it sees no gap and no repeat.
        """
        self.streams_sent[stream] = len(delta["text"])
        await self.send_json(delta)

    def _after_resume(self, event: LiveEvent) -> list[dict[str, Any]]:
        message_id, attempt, start, end = (int(part) for part in event.ids[0].split(":"))
        have = self.streams_sent.get((message_id, attempt))
        if have is None or start >= have:
            return event.messages
        if end <= have:
            return []
        delta = json.loads(event.messages[0]["text"])
        delta["text"] = delta["text"][have - start :]
        delta["offset"] = have
        return [{"type": "websocket.send", "text": json.dumps(delta)}]


class UnknownPathConsumer(JsonSocketConsumer):
    """Any socket path no app serves: say so and close with 4404."""

    async def connect(self) -> None:
        """Accept only to explain, then close."""
        await self.accept()
        await self.close_with(CloseSocket(4404, "not_found", "No socket endpoint at this path."))
