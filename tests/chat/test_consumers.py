"""The chat socket through the real ASGI application and real Redis (no worker needed)."""

import json
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.test import override_settings
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from chat.services import chat_message_create, chat_session_create
from tests.support.cases import TIMEOUT, SocketTestCase, receive_until


class ChatSocketTestCase(SocketTestCase):
    """A fresh session per test, and helpers to talk to its socket."""

    def setUp(self) -> None:
        super().setUp()
        self.session, self.token = chat_session_create(name="Ada")

    async def connect(self, query: str = "", **kwargs):
        return await self.open_socket(f"/ws/chat/{self.token}{query}", **kwargs)

    async def connect_with_history(self, query: str = ""):
        socket = await self.connect(query)
        history = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(history["type"], "history")
        return socket, history["messages"]

    async def send(self, socket, frame: dict) -> dict:
        await socket.send_json_to(frame)
        return await socket.receive_json_from(timeout=TIMEOUT)

    async def message_count(self) -> int:
        return await sync_to_async(ChatMessage.objects.filter(session=self.session).count)()

    async def assert_still_open(self, socket) -> None:
        self.assertEqual(await self.send(socket, {"type": "ping"}), {"type": "pong"})

    async def assert_refused_with(self, socket, error_code: str, close_code: int) -> None:
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["type"], error["code"]), ("error", error_code))
        closed = await socket.receive_output(timeout=TIMEOUT)
        self.assertEqual(closed["type"], "websocket.close")
        self.assertEqual(closed["code"], close_code)


class ConnectTests(ChatSocketTestCase):
    """Authentication, origin checks, history and resume."""

    async def test_unknown_token_gets_an_error_then_close_4401(self) -> None:
        socket = await self.open_socket("/ws/chat/no-such-token")
        await self.assert_refused_with(socket, "session_not_found", 4401)

    async def test_expired_token_gets_close_4401(self) -> None:
        await sync_to_async(ChatSession.objects.filter(pk=self.session.pk).update)(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        socket = await self.open_socket(f"/ws/chat/{self.token}")
        await self.assert_refused_with(socket, "session_not_found", 4401)

    async def test_foreign_or_missing_origin_is_refused_at_the_handshake(self) -> None:
        from channels.testing import WebsocketCommunicator

        from chatsite.asgi import application

        for headers in ([(b"origin", b"http://evil.example")], []):
            with self.subTest(headers=headers):
                socket = WebsocketCommunicator(
                    application, f"/ws/chat/{self.token}", headers=headers
                )
                connected, _ = await socket.connect(timeout=TIMEOUT)
                self.assertFalse(connected)

    async def test_history_lists_the_sessions_messages_oldest_first(self) -> None:
        first, _ = await sync_to_async(chat_message_create)(session_id=self.session.pk, text="1")
        await sync_to_async(chat_message_create)(session_id=self.session.pk, text="2")
        _, messages = await self.connect_with_history()
        self.assertEqual([m["role"] for m in messages], ["user", "assistant"] * 2)
        self.assertEqual([m["text"] for m in messages if m["role"] == "user"], ["1", "2"])
        self.assertEqual(messages[1]["reply_to"], first.pk)
        self.assertEqual(messages[1]["status"], "pending")

    async def test_after_resumes_with_exactly_the_missed_messages(self) -> None:
        first, _ = await sync_to_async(chat_message_create)(session_id=self.session.pk, text="1")
        second, _ = await sync_to_async(chat_message_create)(session_id=self.session.pk, text="2")
        _, messages = await self.connect_with_history(f"?after={first.pk + 1}")
        self.assertEqual([m["id"] for m in messages], [second.pk, second.pk + 1])

    async def test_after_that_is_not_a_message_id_gets_close_4400(self) -> None:
        socket = await self.connect("?after=abc")
        await self.assert_refused_with(socket, "invalid_after", 4400)

    async def test_after_with_non_ascii_digits_gets_close_4400(self) -> None:
        for after in ("%C2%B2", "9" * 40):
            with self.subTest(after=after):
                socket = await self.connect(f"?after={after}")
                await self.assert_refused_with(socket, "invalid_after", 4400)

    async def test_unknown_socket_path_gets_close_4404(self) -> None:
        socket = await self.open_socket("/ws/nothing-here")
        await self.assert_refused_with(socket, "not_found", 4404)

    async def test_ping_gets_pong(self) -> None:
        socket, _ = await self.connect_with_history()
        await self.assert_still_open(socket)


class MessageTests(ChatSocketTestCase):
    """Sending messages: storage, ack, idempotency, fan-out to other tabs."""

    async def test_message_is_stored_then_acked_with_its_pending_reply_queued(self) -> None:
        socket, _ = await self.connect_with_history()
        ack = await self.send(socket, {"type": "message", "text": "hello", "client_id": "c1"})
        self.assertEqual(ack["type"], "ack")
        self.assertEqual(ack["client_id"], "c1")
        self.assertEqual(ack["message"]["text"], "hello")
        self.assertEqual(ack["message"]["role"], "user")
        stored = await sync_to_async(ChatMessage.objects.get)(pk=ack["message"]["id"])
        self.assertEqual(stored.text, "hello")
        reply = await sync_to_async(stored.replies.get)()
        self.assertEqual((reply.role, reply.status), ("assistant", "pending"))

    async def test_same_client_id_again_is_acked_with_the_original_and_not_stored(self) -> None:
        socket, _ = await self.connect_with_history()
        first = await self.send(socket, {"type": "message", "text": "hi", "client_id": "same"})
        again = await self.send(socket, {"type": "message", "text": "hi", "client_id": "same"})
        self.assertEqual(again["type"], "ack")
        self.assertEqual(again["message"], first["message"])
        self.assertEqual(await self.message_count(), 2)  # one question, one reply

    async def test_same_client_id_from_a_reconnected_socket_is_not_stored_twice(self) -> None:
        socket, _ = await self.connect_with_history()
        first = await self.send(socket, {"type": "message", "text": "hi", "client_id": "r1"})
        await socket.disconnect()
        socket, _ = await self.connect_with_history()
        again = await self.send(socket, {"type": "message", "text": "hi", "client_id": "r1"})
        self.assertEqual(again["message"]["id"], first["message"]["id"])
        self.assertEqual(await self.message_count(), 2)

    async def test_resent_message_whose_task_was_lost_queues_its_reply_again(self) -> None:
        from chatsite.celery import app
        from chatsite.redis_clients import get_redis

        socket, _ = await self.connect_with_history()
        await self.send(socket, {"type": "message", "text": "hi", "client_id": "lost"})
        await sync_to_async(app.control.purge)()  # the task never reached the broker
        queue = app.conf.task_default_queue
        self.assertEqual(await sync_to_async(get_redis().llen)(queue), 0)
        await self.send(socket, {"type": "message", "text": "hi", "client_id": "lost"})
        self.assertEqual(await sync_to_async(get_redis().llen)(queue), 1)
        self.assertEqual(await self.message_count(), 2)

    async def test_message_reaches_the_other_tab_but_is_not_echoed_to_the_sender(self) -> None:
        sender, _ = await self.connect_with_history()
        other, _ = await self.connect_with_history()
        ack = await self.send(sender, {"type": "message", "text": "hello", "client_id": "t"})
        echoed = await other.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(echoed, {"type": "message", "message": ack["message"]})
        await self.assert_still_open(sender)  # the next frame is the pong, not an echo

    async def test_message_counts_as_activity_and_extends_the_expiry(self) -> None:
        soon = timezone.now() + timedelta(minutes=1)
        await sync_to_async(ChatSession.objects.filter(pk=self.session.pk).update)(expires_at=soon)
        socket, _ = await self.connect_with_history()
        await self.send(socket, {"type": "message", "text": "still here"})
        await sync_to_async(self.session.refresh_from_db)()
        self.assertGreater(self.session.expires_at, timezone.now() + timedelta(minutes=58))

    async def test_session_that_expired_while_open_closes_4401_on_next_message(self) -> None:
        socket, _ = await self.connect_with_history()
        await sync_to_async(ChatSession.objects.filter(pk=self.session.pk).update)(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        await socket.send_json_to({"type": "message", "text": "hello?"})
        await self.assert_refused_with(socket, "session_expired", 4401)
        self.assertEqual(await self.message_count(), 0)


class BadInputTests(ChatSocketTestCase):
    """Every bad frame gets an error frame; nothing is stored; the socket stays open."""

    async def assert_rejected(self, socket, code: str, *, text=None, bytes_=None) -> dict:
        if bytes_ is not None:
            await socket.send_to(bytes_data=bytes_)
        else:
            await socket.send_to(text_data=text)
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual((error["type"], error["code"]), ("error", code), error)
        self.assertTrue(error["message"])
        self.assertEqual(await self.message_count(), 0)
        await self.assert_still_open(socket)
        return error

    async def test_non_json_text_is_invalid_json(self) -> None:
        socket, _ = await self.connect_with_history()
        await self.assert_rejected(socket, "invalid_json", text="hello there")

    async def test_nan_is_invalid_json(self) -> None:
        socket, _ = await self.connect_with_history()
        await self.assert_rejected(socket, "invalid_json", text='{"type": "message", "x": NaN}')

    async def test_binary_frame_is_refused(self) -> None:
        socket, _ = await self.connect_with_history()
        await self.assert_rejected(socket, "binary_not_supported", bytes_=b'{"type": "ping"}')

    async def test_non_object_or_typeless_frame_is_invalid_message(self) -> None:
        socket, _ = await self.connect_with_history()
        for text in ("[1, 2]", '"ping"', "{}", '{"type": ""}', '{"type": 5}'):
            with self.subTest(text=text):
                await self.assert_rejected(socket, "invalid_message", text=text)

    async def test_unknown_type_is_refused(self) -> None:
        socket, _ = await self.connect_with_history()
        error = await self.assert_rejected(socket, "unknown_type", text='{"type": "launch"}')
        self.assertEqual(error["field"], "type")

    async def test_empty_blank_missing_or_non_string_text_is_invalid_text(self) -> None:
        socket, _ = await self.connect_with_history()
        for text in ('{"type": "message", "text": ""}', '{"type": "message", "text": "  \\n "}',
                     '{"type": "message"}', '{"type": "message", "text": ["a"]}'):  # fmt: skip
            with self.subTest(text=text):
                error = await self.assert_rejected(socket, "invalid_text", text=text)
                self.assertEqual(error["field"], "text")

    @override_settings(CHAT_MAX_MESSAGE_CHARS=50)
    async def test_text_over_the_limit_is_text_too_long_with_the_client_id(self) -> None:
        socket, _ = await self.connect_with_history()
        frame = '{"type": "message", "text": "' + "x" * 51 + '", "client_id": "long"}'
        error = await self.assert_rejected(socket, "text_too_long", text=frame)
        self.assertEqual(error["client_id"], "long")

    async def test_frame_over_the_size_limit_is_refused_before_parsing(self) -> None:
        socket, _ = await self.connect_with_history()
        frame = '{"type": "message", "text": "' + "x" * 40_000 + '"}'
        await self.assert_rejected(socket, "frame_too_large", text=frame)

    async def test_bad_client_id_is_refused(self) -> None:
        socket, _ = await self.connect_with_history()
        for client_id in (5, "", "c" * 65):
            with self.subTest(client_id=client_id):
                frame = json.dumps({"type": "message", "text": "hi", "client_id": client_id})
                await self.assert_rejected(socket, "invalid_client_id", text=frame)

    async def test_retry_with_a_bad_unknown_or_unfailed_id_is_refused(self) -> None:
        socket, _ = await self.connect_with_history()
        await self.assert_rejected(
            socket, "invalid_message_id", text='{"type": "retry", "message_id": "1"}'
        )
        await self.assert_rejected(
            socket, "not_found", text='{"type": "retry", "message_id": 999999}'
        )
        ack = await self.send(socket, {"type": "message", "text": "hi"})
        await socket.send_json_to({"type": "retry", "message_id": ack["message"]["id"]})
        error = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(error["code"], "not_retryable")


@override_settings(CHAT_RATE_LIMIT=3, CHAT_RATE_WINDOW=60)
class RateLimitTests(ChatSocketTestCase):
    """A session sending faster than its limit is told so; the excess is not stored."""

    async def test_messages_past_the_limit_get_rate_limited_and_are_not_stored(self) -> None:
        socket, _ = await self.connect_with_history()
        for index in range(3):
            ack = await self.send(socket, {"type": "message", "text": f"m{index}"})
            self.assertEqual(ack["type"], "ack")
        error = await self.send(socket, {"type": "message", "text": "m3", "client_id": "c3"})
        self.assertEqual(error["code"], "rate_limited")
        self.assertEqual(error["client_id"], "c3")
        self.assertGreater(error["retry_after"], 0)
        self.assertLessEqual(error["retry_after"], 60)
        self.assertEqual(await self.message_count(), 6)
        await self.assert_still_open(socket)

    async def test_the_limit_is_per_session_across_sockets(self) -> None:
        first, _ = await self.connect_with_history()
        second, _ = await self.connect_with_history()
        for index in range(3):
            await self.send(first, {"type": "message", "text": f"m{index}"})
            await receive_until(second, lambda f: f["type"] == "message")
        error = await self.send(second, {"type": "message", "text": "from tab two"})
        self.assertEqual(error["code"], "rate_limited")

    async def test_another_session_is_not_limited_by_this_one(self) -> None:
        socket, _ = await self.connect_with_history()
        for index in range(4):
            await self.send(socket, {"type": "message", "text": f"m{index}"})
        _, other_token = await sync_to_async(chat_session_create)(name="Bob")
        other = await self.open_socket(f"/ws/chat/{other_token}")
        await other.receive_json_from(timeout=TIMEOUT)
        ack = await self.send(other, {"type": "message", "text": "hello"})
        self.assertEqual(ack["type"], "ack")
