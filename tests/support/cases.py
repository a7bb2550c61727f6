"""Base test cases: real Redis (emptied per test) and committed transactions."""

import asyncio
import contextlib
import functools
import inspect
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from channels.testing import ChannelsLiveServerTestCase, WebsocketCommunicator
from django.db import connection, connections
from django.test import TransactionTestCase

from chatsite.asgi import application
from chatsite.celery import app
from chatsite.redis_clients import get_redis
from tests.support.orphans import OrphanProofDaphneProcess

ORIGIN = b"http://localhost"
TIMEOUT = 60.0


class RedisTransactionTestCase(TransactionTestCase):
    """Committed data (workers and sockets see it) and a clean Redis for every test."""

    def setUp(self) -> None:
        super().setUp()
        reset_redis()


def reset_redis() -> None:
    """Drop the project's own keys and queued tasks, leaving Celery's bindings in place.

    FLUSHDB would also remove kombu's exchange bindings and control keys under a worker
    that lives across tests, and its tasks would then be silently dropped.
    """
    client = get_redis()
    for pattern in ("ratelimit:*", "chat:*", "sensors:*", "rooms:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    app.control.purge()


class LiveServerTestCase(ChannelsLiveServerTestCase):
    """A real daphne in a forked process on the test database, and a clean Redis per test.

    Two SQLite hazards across the fork, both seen as the server missing new rows:
    - a connection open here when daphne forks is shared with it (fcntl locks are not
      inherited), so Django's connections are closed first and the server opens its own;
    - in WAL mode the last connection to close deletes the -wal/-shm files, which a
      process still holding them keeps reading, so one keeper connection stays open for
      the class and no connection is ever the last.
    """

    ProtocolServerProcess = OrphanProofDaphneProcess

    @classmethod
    def setUpClass(cls) -> None:
        connections.close_all()
        cls._wal_keeper: sqlite3.Connection | None = None
        if connection.vendor == "sqlite":
            cls._wal_keeper = sqlite3.connect(connection.settings_dict["NAME"])
            cls._wal_keeper.execute("SELECT count(*) FROM sqlite_master").fetchall()
        try:
            super().setUpClass()
        except BaseException:
            cls._close_wal_keeper()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()
        finally:
            cls._close_wal_keeper()

    @classmethod
    def _close_wal_keeper(cls) -> None:
        if cls._wal_keeper is not None:
            cls._wal_keeper.close()
            cls._wal_keeper = None

    def setUp(self) -> None:
        super().setUp()
        reset_redis()


class SocketTestCase(RedisTransactionTestCase):
    """Async tests whose sockets are all disconnected at the end, even when a test fails."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, method in list(vars(cls).items()):
            if name.startswith("test") and inspect.iscoroutinefunction(method):
                setattr(cls, name, _closing_sockets(method))

    async def open_socket(self, path: str, **kwargs: Any) -> WebsocketCommunicator:
        """Connect like open_socket(); the socket is closed when the test ends."""
        socket = await open_socket(path, **kwargs)
        self._sockets.append(socket)
        return socket


def _closing_sockets(method: Callable) -> Callable:
    @functools.wraps(method)
    async def wrapper(self: SocketTestCase, *args: Any, **kwargs: Any) -> Any:
        self._sockets = []
        try:
            return await method(self, *args, **kwargs)
        finally:
            for socket in self._sockets:
                with contextlib.suppress(Exception):
                    await socket.disconnect(timeout=TIMEOUT)
            await loop_quiesce()

    return wrapper


async def loop_quiesce() -> None:
    """Stop what this test's event loop still runs, in order and each within a bound.

    Left to the loop's shutdown, every leftover task (the presence sweeper, the live
    fan-out's and the channel layer's pub/sub readers, Redis connections) is cancelled at
    once, and under load that once never finished.
    """
    from channels.layers import get_channel_layer

    from chat.rooms.presence import presence_sweeper_stop
    from chatsite.fanout import local_fanout_close
    from chatsite.redis_clients import async_redis_close

    steps = (
        presence_sweeper_stop(), local_fanout_close(), get_channel_layer().flush(),
        async_redis_close(),
    )  # fmt: skip
    for step in steps:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(step, timeout=10)


async def open_socket(
    path: str,
    *,
    origin: bytes | None = ORIGIN,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> WebsocketCommunicator:
    """Connect to the real ASGI application; the caller disconnects."""
    headers = [*([(b"origin", origin)] if origin is not None else []), *(headers or [])]
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected, f"socket {path} was refused"
    return communicator


async def receive_until(
    communicator: WebsocketCommunicator,
    done: Callable[[dict[str, Any]], bool],
    *,
    within: float = TIMEOUT,
) -> list[dict[str, Any]]:
    """Collect JSON frames until one satisfies `done` (included); fail after `within` s."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"condition not met within {within}s; got {frames}")
        try:
            frame = await communicator.receive_json_from(timeout=left)
        except TimeoutError:
            raise AssertionError(f"condition not met within {within}s; got {frames}") from None
        frames.append(frame)
        if done(frame):
            return frames


def wait_until(
    condition: Callable[[], Any], *, timeout: float = TIMEOUT, interval: float = 0.05
) -> Any:
    """Poll a condition (for state with no event to await, e.g. a row); fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
