"""bench/rawws.py, the watchers' client, against a real websockets server."""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.test import SimpleTestCase
from fanout import frame_marks, frame_marks_json
from rawws import HandshakeError, RawWatcher, raw_watch
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Response

TIMEOUT = 30.0
SERVER_LOG = logging.getLogger("tests.bench.server")  # quiet: its INFO lines are per connection
SERVER_LOG.setLevel(logging.WARNING)
Handler = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    """A websockets server on a free loopback port; yields its ws:// URL."""
    async with serve(handler, "127.0.0.1", 0, compression=None, logger=SERVER_LOG, **kwargs) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws/sensors/probe"


class Received:
    """What a raw watcher got, with an event per count reached."""

    def __init__(self) -> None:
        self.texts: list[bytes] = []
        self.changed = asyncio.Event()

    def __call__(self, payload: bytes, now: float) -> None:
        self.texts.append(payload)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.texts) < count:
                self.changed.clear()
                await self.changed.wait()


async def open_watcher(url: str, received: Received) -> RawWatcher:
    return await raw_watch(url, origin="http://127.0.0.1", on_text=received, open_timeout=TIMEOUT)


class RawWatcherTests(SimpleTestCase):
    async def test_messages_of_every_length_form_arrive_whole_and_in_order(self) -> None:
        texts = ["small", "m" * 300, "l" * 70_000, "é" * 10]

        async def handler(ws: ServerConnection) -> None:
            for text in texts:
                await ws.send(text)
            await ws.send(["frag", "ment", "ed"])  # one message in three frames
            await ws.wait_closed()

        received = Received()
        async with server(handler) as url:
            watcher = await open_watcher(url, received)
            await received.wait_for(5)
            watcher.close()
        self.assertEqual([t.encode() for t in [*texts, "fragmented"]], received.texts)

    async def test_handshake_sends_the_origin_and_path(self) -> None:
        seen: dict[str, Any] = {}

        async def handler(ws: ServerConnection) -> None:
            seen["origin"] = ws.request.headers.get("Origin")
            seen["path"] = ws.request.path
            await ws.send("hello")
            await ws.wait_closed()

        received = Received()
        async with server(handler) as url:
            watcher = await open_watcher(url + "?after=1-0", received)
            await received.wait_for(1)
            watcher.close()
        self.assertEqual(
            {"origin": "http://127.0.0.1", "path": "/ws/sensors/probe?after=1-0"}, seen
        )

    async def test_pings_are_answered(self) -> None:
        answered = asyncio.get_running_loop().create_future()

        async def handler(ws: ServerConnection) -> None:
            pong = await ws.ping(b"are you there")
            await pong
            answered.set_result(True)
            await ws.wait_closed()

        async with server(handler, ping_interval=None) as url:
            watcher = await open_watcher(url, Received())
            self.assertTrue(await asyncio.wait_for(answered, TIMEOUT))
            watcher.close()

    async def test_server_close_code_is_reported(self) -> None:
        async def handler(ws: ServerConnection) -> None:
            await ws.close(4401)

        async with server(handler) as url:
            watcher = await open_watcher(url, Received())
            self.assertEqual(4401, await asyncio.wait_for(watcher.closed, TIMEOUT))

    async def test_refused_upgrade_raises(self) -> None:
        def refuse(ws: ServerConnection, request: Any) -> Response:
            return ws.respond(403, "no\n")

        async def handler(ws: ServerConnection) -> None:
            raise AssertionError("the connection must not open")

        async with server(handler, process_request=refuse) as url:
            with self.assertRaisesRegex(HandshakeError, "403"):
                await open_watcher(url, Received())

    async def test_wrong_accept_key_raises(self) -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBrZXk=\r\n\r\n"
            )
            await writer.drain()
            await reader.read()  # until the client hangs up
            writer.close()

        plain = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with plain:
            port = plain.sockets[0].getsockname()[1]
            with self.assertRaisesRegex(HandshakeError, "Sec-WebSocket-Accept"):
                await open_watcher(f"ws://127.0.0.1:{port}/ws/sensors/probe", Received())


class FrameMarksTests(SimpleTestCase):
    def test_site_relay_and_list_frames_read_as_the_full_parse_does(self) -> None:
        site = {"type": "reading", "sensor": "s", "id": "1-0", "ts": 1}
        frames = [
            {**site, "values": {"sent_ms": 1.5, "seq": 7.0}},
            {"values": {"sent_ms": 17.25, "seq": 9}},
            [{"values": {"seq": 3, "sent_ms": 2}}, {"values": {"rh": 4, "sent_ms": 4, "seq": 5}}],
            {"type": "status", "sensor": "s", "online": True},
        ]
        for frame in frames:
            for separators in ((",", ":"), (", ", ": ")):
                payload = json.dumps(frame, separators=separators).encode()
                with self.subTest(payload=payload):
                    self.assertEqual(frame_marks_json(payload), frame_marks(payload))
        self.assertEqual([(7, 1.5)], frame_marks(json.dumps(frames[0]).encode()))
