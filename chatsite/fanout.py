"""Live groups: one Redis pub/sub subscription per group and process, fanned out locally.

A socket that joins a channel-layer group gets its own channel, and every group event is
then queued, decoded and dispatched once per socket, with a task switch and a thread hop
each. For groups with many sockets in one process (the watchers of a busy sensor) that
machinery cost ten times the send itself (docs/performance-fanout.md). A live group is
instead one Redis pub/sub channel: each process subscribes once, decodes each event once,
builds its ASGI send messages once, and hands them to each local member's outbox, which
writes them straight to the server. A slow socket delays only itself, and one that falls
too far behind is closed (it resumes from the stream). Like the pub/sub channel layer,
this delivers at most once: a process cut off from Redis misses what was sent meanwhile.
"""

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from websockets.frames import Frame, Opcode

from chatsite.redis_clients import get_async_redis, get_redis

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
# The server's synchronous write of a prepared frame (the PREPARED_FRAME extension's
# "write"): True if written, False if the message must go through send instead.
WritePrepared = Callable[[bytes], bool]


LIVE_CHANNEL_PREFIX = "chatsite:live:"
SUBSCRIBE_TIMEOUT = 10.0  # seconds for Redis to confirm a subscription
# An ASGI extension (chatsite.uvicorn_ws): websocket.send messages may carry the text's
# WebSocket frame, encoded once for every socket; servers without it send the text.
PREPARED_FRAME = "chatsite.prepared_frame"


def live_channel(group: str) -> str:
    """The Redis pub/sub channel of a live group."""
    return LIVE_CHANNEL_PREFIX + group


def live_payload(frames: list[str], ids: list[str] | None = None) -> str:
    """A live event on the wire: the ids (comma-separated) on one line, then one per frame.

    Frames are json.dumps output, which never holds a raw newline. sensors.services builds the
    same format in Lua, so that appending and publishing are one round trip.
    """
    return ",".join(ids or ()) + "\n" + "\n".join(frames)


def live_publish_sync(group: str, frames: list[str], ids: list[str] | None = None) -> None:
    """Send frames to every socket of a live group, in every process (sync code)."""
    get_redis().publish(live_channel(group), live_payload(frames, ids))


class LiveEvent:
    """One live event as the fan-out hands it to members: decoded and prepared once."""

    __slots__ = ("ids", "memo", "messages")

    def __init__(self, payload: str) -> None:
        head, _, body = payload.partition("\n")
        self.ids: list[str] | None = head.split(",") if head else None
        self.messages: list[dict[str, Any]] = [
            {
                "type": "websocket.send",
                "text": frame,
                PREPARED_FRAME: Frame(Opcode.TEXT, frame.encode()).serialize(mask=False),
            }
            for frame in body.split("\n")
        ]
        # What members derive from the event (parsed ids, say), computed by the first one.
        self.memo: dict[str, Any] = {}


class Member(Protocol):
    def live_deliver(self, event: LiveEvent) -> None: ...


class LocalFanout:
    """The live groups this event loop's sockets joined, all read from one subscription."""

    def __init__(self) -> None:
        self.members: dict[str, set[Member]] = {}
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.confirming: dict[str, asyncio.Future[None]] = {}

    async def join(self, group: str, member: Member) -> None:
        """Add a member; the first one in this process subscribes the process to the group."""
        async with self.lock:
            members = self.members.setdefault(group, set())
            members.add(member)
            if len(members) == 1:
                await self._subscribe(live_channel(group))

    async def _subscribe(self, channel: str) -> None:
        # Wait for Redis to confirm: a caller reads history next, and a reading published
        # before the subscription took effect would otherwise fall between the two.
        if self.pubsub is None:
            self.pubsub = get_async_redis().pubsub()
        confirmed = self.confirming[channel] = asyncio.get_running_loop().create_future()
        await self.pubsub.subscribe(channel)
        if self.reader is None:
            self.reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT)
        finally:
            self.confirming.pop(channel, None)

    async def leave(self, group: str, member: Member) -> None:
        """Remove a member; the last one in this process drops the subscription."""
        async with self.lock:
            members = self.members.get(group)
            if not members or member not in members:
                return
            members.discard(member)
            if not members:
                del self.members[group]
                await self.pubsub.unsubscribe(live_channel(group))

    async def _read(self) -> None:
        prefix = len(LIVE_CHANNEL_PREFIX)
        while True:
            try:
                message = await self.pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: redis-py reconnects and subscribes again
                logger.exception("live fan-out: reading failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            if message is None:
                continue
            if message["type"] == "subscribe":
                confirmed = self.confirming.get(message["channel"].decode())
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
            if message["type"] != "message":
                continue
            group = message["channel"].decode()[prefix:]
            event = LiveEvent(message["data"].decode())
            for member in tuple(self.members.get(group, ())):
                try:
                    member.live_deliver(event)
                except Exception:
                    logger.exception("live fan-out of %s to a socket failed", group)


_fanouts: dict[asyncio.AbstractEventLoop, LocalFanout] = {}


def local_fanout() -> LocalFanout:
    """This event loop's fan-out (one per loop, as Redis connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None:
        for old in [k for k in _fanouts if k.is_closed()]:
            del _fanouts[old]
        fanout = _fanouts[loop] = LocalFanout()
    return fanout


async def _resume(coro: Any, waiting_on: Any) -> None:
    """Run a coroutine that Outbox started by hand to its end, as a task would have."""
    while True:
        try:
            if waiting_on is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
            else:
                # Clear the flag the yield set, as a task does; awaiting it again would
                # otherwise fail with "await wasn't used with future".
                waiting_on._asyncio_future_blocking = False
                await waiting_on  # the future it suspended on
        except BaseException as exc:  # cancelled: the send sees it, as in a task
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            return


async def local_fanout_close() -> None:
    """Stop this event loop's fan-out: its reader, then its subscription connection."""
    fanout = _fanouts.pop(asyncio.get_running_loop(), None)
    if fanout is None:
        return
    if fanout.reader is not None:
        fanout.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fanout.reader
    if fanout.pubsub is not None:
        await fanout.pubsub.aclose()


class Outbox:
    """ASGI messages for one socket, written in order, inline while the socket keeps up.

    A send to a client that reads in time completes without suspending, so each message is
    written on the spot, with no task switch per socket. When a send has to wait (the
    server's write buffer is full), that send and everything after it go to a writer task.
    A backlog over `limit` messages ends the connection with `on_overflow`'s messages.
    Where the server offers `write`, prepared frames are written with it, which is the
    same write without a coroutine per message.
    """

    def __init__(
        self,
        send: Send,
        *,
        limit: int,
        on_overflow: Callable[[], list[dict[str, Any]]],
        write: WritePrepared | None = None,
    ) -> None:
        self.send = send
        self.write = write
        self.limit = limit
        self.on_overflow = on_overflow
        self.backlog: deque[dict[str, Any]] | None = None  # None while writing inline
        self.writer: asyncio.Task[None] | None = None
        self.closed = False

    def put(self, messages: Iterable[dict[str, Any]]) -> None:
        """Write the messages now, or queue them behind a send that is waiting."""
        if self.closed:
            return
        if self.backlog is not None:
            self.backlog.extend(messages)
            if len(self.backlog) > self.limit:
                self.backlog.clear()
                self.backlog.extend(self.on_overflow())
                self.closed = True
            return
        pending = iter(messages)
        write = self.write
        for message in pending:
            if write is not None:
                frame = message.get(PREPARED_FRAME)
                if frame is not None and write(frame):
                    continue
            coro = self.send(message)
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                continue
            except Exception as exc:  # the socket went away under the send
                logger.debug("live frames to a closed socket: %r", exc)
                self.closed = True
                return
            self.backlog = deque(pending)
            self.writer = asyncio.create_task(self._write(coro, waiting_on))
            return

    async def _write(self, started: Any, waiting_on: Any) -> None:
        try:
            await _resume(started, waiting_on)
            while self.backlog:
                await self.send(self.backlog.popleft())
            self.backlog = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("live frames to a closed socket: %r", exc)
            self.closed = True

    def close(self) -> None:
        """Stop writing (the socket is gone)."""
        self.closed = True
        if self.writer is not None:
            self.writer.cancel()


class LiveFeed:
    """One socket's live groups: events held until it starts, then written by its outbox."""

    def __init__(
        self,
        *,
        send: Send,
        select: Callable[[LiveEvent], list[dict[str, Any]]],
        limit: int,
        on_overflow: Callable[[], list[dict[str, Any]]],
        write: WritePrepared | None = None,
    ) -> None:
        self.groups: set[str] = set()
        self.held: list[LiveEvent] | None = []
        self.select = select
        self.outbox = Outbox(send, limit=limit, on_overflow=on_overflow, write=write)

    async def join(self, group: str) -> None:
        """Receive the group's events (held until start())."""
        self.groups.add(group)
        await local_fanout().join(group, self)

    def start(self) -> None:
        """Write the events held since join(), then each as it comes."""
        held, self.held = self.held or [], None
        for event in held:
            self.live_deliver(event)

    def live_deliver(self, event: LiveEvent) -> None:
        """Take one event from the fan-out (never blocks)."""
        if self.held is not None:
            self.held.append(event)
            return
        messages = self.select(event)
        if messages:
            self.outbox.put(messages)

    async def leave_all(self) -> None:
        """Leave every group and stop writing."""
        for group in self.groups:
            await local_fanout().leave(group, self)
        self.groups.clear()
        self.held = None
        self.outbox.close()
