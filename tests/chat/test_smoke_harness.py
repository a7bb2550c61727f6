"""Temporary: proves the harness (Redis, worker subprocess, sockets) works end to end."""

from chat.services import chat_session_create
from tests.support.cases import RedisTransactionTestCase, open_socket, receive_until
from tests.support.worker import CeleryWorker


class HarnessTests(RedisTransactionTestCase):
    async def test_offline_reply_arrives(self):
        from asgiref.sync import sync_to_async

        worker = await sync_to_async(CeleryWorker(env={"OFFLINE_CHUNK_DELAY": "0"}).start)()
        try:
            session, token = await sync_to_async(chat_session_create)(name="x")
            ws = await open_socket(f"/ws/chat/{token}")
            hist = await ws.receive_json_from(timeout=30)
            self.assertEqual(hist, {"type": "history", "messages": []})
            await ws.send_json_to({"type": "message", "text": "hi", "client_id": "a"})
            frames = await receive_until(ws, lambda f: f["type"] == "reply")
            self.assertIn("hi", frames[-1]["message"]["text"])
            await ws.disconnect()
        finally:
            await sync_to_async(worker.stop)()
