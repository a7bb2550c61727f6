"""bench/chat_peer.py, the plain design, against a real Redis and the stand-in model."""

import asyncio
import contextlib
import json
import urllib.error
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from chat_load import create_session
from chat_peer import ApiConnection, Keys, Web, Worker
from django.conf import settings
from django.test import SimpleTestCase
from standin_model import StandinModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve

from tests.bench.test_rawws import SERVER_LOG

TIMEOUT = 30.0
TOKENS = 6


@dataclass
class Stack:
    url: str
    model: StandinModel


@contextlib.asynccontextmanager
async def peer_stack() -> AsyncIterator[Stack]:
    """The stand-in, the worker and the web server, in this loop, on keys of their own."""
    keys = Keys(f"benchpeer-{uuid.uuid4().hex}")
    model = await StandinModel(tokens=TOKENS, token_delay=0.01).start()
    worker = Worker(settings.REDIS_URL, model.url, keys=keys)
    web = Web(settings.REDIS_URL, keys=keys)
    await worker.start()
    reading = asyncio.create_task(worker.run())
    try:
        async with serve(
            web.handler, "127.0.0.1", 0, process_request=web.process_request,
            create_connection=ApiConnection, compression=None, logger=SERVER_LOG,
        ) as server:  # fmt: skip
            port = server.sockets[0].getsockname()[1]
            yield Stack(f"http://127.0.0.1:{port}", model)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await worker.close()
        await web.close()
        await model.close()
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        async for key in client.scan_iter(match=f"{keys.prefix}:*"):
            await client.delete(key)
        await client.aclose()


async def open_chat(url: str) -> ClientConnection:
    token = await asyncio.to_thread(create_session, url, "peer test", TIMEOUT)
    ws = await connect(
        f"ws://{url.removeprefix('http://')}/ws/chat/{token}", origin="http://127.0.0.1",  # type: ignore[arg-type]
        open_timeout=TIMEOUT, compression=None, proxy=None,
    )  # fmt: skip
    return ws


async def frames_until(ws: ClientConnection, done: Any) -> list[dict[str, Any]]:
    """Frames received until done(frame) holds for one (included)."""
    frames = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            frames.append(json.loads(await ws.recv()))
            if done(frames[-1]):
                return frames


def message(text: str, client_id: str) -> str:
    return json.dumps({"type": "message", "text": text, "client_id": client_id})


class ChatPeerTests(SimpleTestCase):
    async def test_a_message_gets_an_ack_deltas_and_the_whole_reply(self) -> None:
        async with peer_stack() as stack:
            ws = await open_chat(stack.url)
            try:
                history = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                self.assertEqual({"type": "history", "messages": []}, history)
                await ws.send(message("Hello", "c-1"))
                frames = await frames_until(ws, lambda f: f["type"] == "reply")
            finally:
                await ws.close()
        ack = frames[0]
        self.assertEqual(("ack", "c-1"), (ack["type"], ack["client_id"]))
        user = ack["message"]
        self.assertEqual(
            {"role": "user", "text": "Hello", "status": "done", "reply_to": None,
             "client_id": "c-1"},
            {k: user[k] for k in ("role", "text", "status", "reply_to", "client_id")},
        )  # fmt: skip
        deltas, reply = frames[1:-1], frames[-1]["message"]
        self.assertTrue(deltas)
        self.assertTrue(all(d["type"] == "delta" for d in deltas))
        self.assertEqual({reply["id"]}, {d["message_id"] for d in deltas})
        self.assertEqual({user["id"]}, {d["reply_to"] for d in deltas})
        offsets = [0]
        for delta in deltas:
            offsets.append(offsets[-1] + len(delta["text"]))
        self.assertEqual(offsets[:-1], [d["offset"] for d in deltas])
        self.assertEqual("tok " * TOKENS, "".join(d["text"] for d in deltas))
        self.assertEqual(
            {"id": user["id"] + 1, "role": "assistant", "text": "tok " * TOKENS,
             "status": "done", "reply_to": user["id"], "client_id": None},
            {k: reply[k] for k in ("id", "role", "text", "status", "reply_to", "client_id")},
        )  # fmt: skip

    async def test_a_conversation_is_answered_in_order_with_its_history(self) -> None:
        async with peer_stack() as stack:
            ws = await open_chat(stack.url)
            try:
                await asyncio.wait_for(ws.recv(), TIMEOUT)  # history
                await ws.send(message("first", "c-1"))
                await ws.send(message("second", "c-2"))
                replies = 0

                def second_reply(frame: dict[str, Any]) -> bool:
                    nonlocal replies
                    replies += frame["type"] == "reply"
                    return replies == 2

                frames = await frames_until(ws, second_reply)
            finally:
                await ws.close()
        acks = [f["message"]["id"] for f in frames if f["type"] == "ack"]
        self.assertEqual(2, len(acks))
        answered = [f.get("reply_to") or f["message"]["reply_to"] for f in frames
                    if f["type"] in ("delta", "reply")]  # fmt: skip
        first_done = max(i for i, to in enumerate(answered) if to == acks[0])
        self.assertTrue(all(to == acks[1] for to in answered[first_done + 1 :]))
        self.assertTrue(all(to == acks[0] for to in answered[: first_done + 1]))
        prompts = [(r.prompt, r.messages) for r in stack.model.records]
        self.assertEqual([("first", 2), ("second", 4)], prompts)  # system, user, reply, user

    async def test_bad_session_requests_are_refused(self) -> None:
        async with peer_stack() as stack:
            with self.assertRaises(urllib.error.HTTPError) as caught:
                await asyncio.to_thread(create_session, stack.url, "   ", TIMEOUT)
            self.assertEqual(400, caught.exception.code)
            caught.exception.close()  # or the server waits for this client to hang up
            ws = await connect(
                f"ws://{stack.url.removeprefix('http://')}/ws/chat/unknown",
                open_timeout=TIMEOUT, proxy=None,
            )  # fmt: skip
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            finally:
                await ws.close()
            self.assertEqual("session_not_found", frame["code"])
            self.assertEqual(4401, ws.close_code)
