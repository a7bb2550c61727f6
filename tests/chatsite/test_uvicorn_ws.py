"""The web process's WebSocket protocol: uvicorn's, with prepared frames and read-ahead."""

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
import websockets
from django.test import SimpleTestCase
from websockets.frames import Frame, Opcode

from chatsite.fanout import PREPARED_FRAME
from chatsite.uvicorn_ws import PreparedFrameProtocol

TIMEOUT = 30.0


def prepared(text: str) -> bytes:
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class ScopeRecorder:
    """An ASGI app that sends one message holding two different texts, then "end".

    The "text" says "plain" and the prepared frame says "prepared", so what the client
    reads tells which of the two the server wrote. Where the extension offers `write`,
    it also writes a prepared "written" with it, between the two.
    """

    def __init__(self) -> None:
        self.extensions: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.extensions = scope["extensions"]
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = {"type": "websocket.send", "text": "plain", PREPARED_FRAME: prepared("prepared")}
        await send(message)
        write = self.extensions.get(PREPARED_FRAME, {}).get("write")
        if write is not None:
            assert write(prepared("written"))
        await send({"type": "websocket.send", "text": "end"})
        await receive()  # websocket.disconnect


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(
    app: Any, *, deflate: bool = False, max_queue: int = 32, protocol: type = PreparedFrameProtocol
) -> AsyncIterator[str]:
    """A real uvicorn server with PreparedFrameProtocol on a free port, stopped on exit."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), ws=protocol,
        ws_per_message_deflate=deflate, ws_max_queue=max_queue, lifespan="off",
        log_config=None, log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # raise why it stopped
                await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{config.port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)


async def exchange(*, deflate: bool) -> tuple[list[str], dict[str, Any]]:
    app = ScopeRecorder()
    async with serving(app, deflate=deflate) as url:
        compression = "deflate" if deflate else None
        async with websockets.connect(url, compression=compression, open_timeout=TIMEOUT) as ws:
            texts = []
            while not texts or texts[-1] != "end":
                texts.append(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return texts, app.extensions


class PreparedFrameProtocolTests(SimpleTestCase):
    def test_prepared_frame_is_written_as_it_is(self) -> None:
        texts, extensions = asyncio.run(exchange(deflate=False))
        self.assertEqual(texts, ["prepared", "written", "end"])
        self.assertIn(PREPARED_FRAME, extensions)

    def test_compressed_connection_gets_the_text_and_no_extension(self) -> None:
        texts, extensions = asyncio.run(exchange(deflate=True))
        self.assertEqual(texts, ["plain", "end"])
        self.assertNotIn(PREPARED_FRAME, extensions)


class ReadLater:
    """An ASGI app that accepts, reads nothing until released, then reads `count` texts."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.release = asyncio.Event()
        self.received: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await self.release.wait()
        while len(self.received) < self.count:
            self.received.append((await receive())["text"])
        await send({"type": "websocket.send", "text": "done"})
        await receive()  # websocket.disconnect


async def read_ahead(*, count: int, max_queue: int) -> tuple[int, list[str], str]:
    """Send `count` 64 KiB texts to a busy app; its backlog when the server paused reading."""
    paused, backlog = asyncio.Event(), []

    class Watched(PreparedFrameProtocol):
        def send_receive_event_to_app(self) -> None:
            super().send_receive_event_to_app()
            if self.read_paused and not paused.is_set():
                backlog.append(self.queue.qsize())
                paused.set()

    async def send_all(ws: Any) -> None:
        for i in range(count):
            await ws.send(f"{i:06d}" + "x" * 65536)

    app = ReadLater(count)
    async with (
        serving(app, max_queue=max_queue, protocol=Watched) as url,
        websockets.connect(url, compression=None, open_timeout=TIMEOUT) as ws,
    ):
        sending = asyncio.create_task(send_all(ws))
        await asyncio.wait_for(paused.wait(), TIMEOUT)
        app.release.set()
        await asyncio.wait_for(sending, TIMEOUT)
        done = await asyncio.wait_for(ws.recv(), TIMEOUT)
    return backlog[0], app.received, done


class ReadAheadTests(SimpleTestCase):
    def test_reading_pauses_once_the_app_is_ws_max_queue_messages_behind(self) -> None:
        backlog, received, done = asyncio.run(read_ahead(count=60, max_queue=8))
        self.assertEqual(backlog, 8)  # uvicorn's own pauses after every message
        self.assertEqual(done, "done")
        self.assertEqual([text[:6] for text in received], [f"{i:06d}" for i in range(60)])
