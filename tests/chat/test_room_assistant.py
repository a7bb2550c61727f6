"""The assistant in a room: @assistant → real Celery worker → real HTTP → the room's group.

The room socket is tested on its own; here a channel in the room's group stands in for
every member's socket, receiving exactly the frames they would be sent.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from chat.errors import ChatError
from chat.rooms.assistant import room_reply_retry, room_reply_stop
from chat.rooms.models import ASSISTANT_NAME, Room, RoomMessage, room_group_name
from chat.rooms.serializers import room_message_data
from chat.rooms.services import room_create, room_message_create
from chatsite.errors import AppError
from chatsite.fanout import LiveEvent, local_fanout
from tests.chat.test_pipeline import FAST_RETRIES, PipelineTestCase, slow_reply
from tests.support.cases import TIMEOUT
from tests.support.inference_server import Fail, Reply

Frame = dict[str, Any]


class RoomListener:
    """What every member's socket is sent, as parsed frames: the room's channel-layer group
    and its live group (the assistant's reply frames, through this process's fan-out as a
    socket gets them), in arrival order."""

    def __init__(self, slug: str) -> None:
        self.group = room_group_name(slug)
        self.layer = get_channel_layer()
        self.channel = ""
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.reader: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def __aenter__(self) -> "RoomListener":
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)
        await local_fanout().join(self.group, self)
        self.reader = asyncio.create_task(self._read_layer())
        # The layer subscribes without waiting for Redis to confirm: probe until it hears.
        deadline = time.monotonic() + TIMEOUT
        while not self.listening.is_set():
            assert time.monotonic() < deadline, "the room's group never answered"
            await self.layer.group_send(self.group, {"type": "probe"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listening.wait(), 0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.reader is not None
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        await local_fanout().leave(self.group, self)
        await self.layer.group_discard(self.group, self.channel)

    async def _read_layer(self) -> None:
        while True:
            event = await self.layer.receive(self.channel)
            if event["type"] == "probe":
                self.listening.set()
                continue
            assert event["type"] == "socket.frame", event
            self.frames.put_nowait(json.loads(event["frame"]))

    def live_deliver(self, event: LiveEvent) -> None:
        """A live event, as the fan-out hands it to a member."""
        for message in event.messages:
            self.frames.put_nowait(json.loads(message["text"]))

    async def receive_until(
        self, done: Callable[[Frame], bool], *, within: float = TIMEOUT
    ) -> list[Frame]:
        """Collect frames until one satisfies `done` (included); fail after `within` s."""
        frames: list[Frame] = []
        deadline = time.monotonic() + within
        while True:
            try:
                frame = await asyncio.wait_for(
                    self.frames.get(), timeout=max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                raise AssertionError(f"condition not met within {within}s; got {frames}") from None
            frames.append(frame)
            if done(frames[-1]):
                return frames

    async def receive_until_all(self, *conditions: Callable[[Frame], bool]) -> list[Frame]:
        """Collect frames until each condition has been met by one of them, in any order."""
        left = list(conditions)

        def done(frame: Frame) -> bool:
            left[:] = [condition for condition in left if not condition(frame)]
            return not left

        return await self.receive_until(done)


def reply_to(question: Frame) -> Callable[[Frame], bool]:
    """The stored reply to this question arrived."""
    return lambda f: f["type"] == "reply" and f["message"]["reply_to"] == question["id"]


def of_type(kind: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == kind


def turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    """A request's prompt after the system prompt, as (role, content)."""
    return [(m["role"], m["content"]) for m in body["messages"][1:]]


class RoomAssistantTestCase(PipelineTestCase):
    """One inference server and worker per class; a fresh room per test."""

    worker_env = {"ROOM_ASSISTANT_CONTEXT_MESSAGES": "4"}

    def setUp(self) -> None:
        super().setUp()
        self.room = room_create(slug="lobby", title="The Lobby")

    async def say(self, author: str, text: str, *, room: Room | None = None) -> Frame:
        """Post a member's message as the room socket would; its wire object."""
        message, _ = await sync_to_async(room_message_create)(
            room=room or self.room, author=author, text=text
        )
        return room_message_data(message)

    async def assistant_rows(self, room: Room | None = None) -> list[RoomMessage]:
        return await sync_to_async(list)(
            RoomMessage.objects.filter(room=room or self.room, author=ASSISTANT_NAME)
        )


class StreamingTests(RoomAssistantTestCase):
    """A question gets a pending message, deltas and the reply, with the room as context."""

    async def test_mention_streams_into_the_room_with_members_messages_as_context(self) -> None:
        self.server.script(Reply(["It ", "is ", "blue."], delay=0.02))
        async with RoomListener("lobby") as room:
            await self.say("alice", "the sky is blue")
            question = await self.say("bob", "@assistant what colour is the sky?")
            frames = await room.receive_until(reply_to(question))

        kinds = [f["type"] for f in frames]
        self.assertEqual((kinds[:3], set(kinds[3:-1])), (["message"] * 3, {"delta"}))
        messages = [f["message"] for f in frames[:3]]
        self.assertEqual([m["author"] for m in messages], ["alice", "bob", "assistant"])
        pending = messages[-1]
        self.assertEqual(
            (pending["status"], pending["text"], pending["reply_to"]),
            ("pending", "", question["id"]),
        )
        deltas = [f for f in frames if f["type"] == "delta"]
        self.assertEqual("".join(d["text"] for d in deltas), "It is blue.")
        self.assertEqual(
            [d["offset"] for d in deltas],
            [sum(len(d["text"]) for d in deltas[:i]) for i in range(len(deltas))],
        )
        self.assertTrue(all(d["message_id"] == pending["id"] for d in deltas))
        self.assertTrue(all(d["reply_to"] == question["id"] for d in deltas))
        reply = frames[-1]["message"]
        self.assertEqual(
            (reply["id"], reply["author"], reply["text"], reply["status"]),
            (pending["id"], "assistant", "It is blue.", "done"),
        )

        [body] = self.server.bodies
        system = body["messages"][0]
        self.assertEqual(system["role"], "system")
        self.assertIn("The Lobby", system["content"])
        self.assertIn("@assistant", system["content"])
        self.assertEqual(
            turns(body),
            [
                ("user", "alice: the sky is blue"),
                ("user", "bob: @assistant what colour is the sky?"),
            ],
        )
        [stored] = await self.assistant_rows()
        self.assertEqual((stored.status, stored.text, stored.attempt), ("done", "It is blue.", 1))

    async def test_two_quick_questions_are_answered_in_order(self) -> None:
        self.server.script(
            Reply(["first", " answer"], delay=0.05), Reply(["second", " answer"], delay=0.05)
        )
        async with RoomListener("lobby") as room:
            first = await self.say("bob", "@assistant one")
            second = await self.say("carol", "@assistant two")
            frames = await room.receive_until(reply_to(second))

        replies = [f["message"] for f in frames if f["type"] == "reply"]
        self.assertEqual([r["reply_to"] for r in replies], [first["id"], second["id"]])
        self.assertEqual([r["text"] for r in replies], ["first answer", "second answer"])
        one, two = self.server.wait_for_requests(2)
        self.assertEqual(turns(one), [("user", "bob: @assistant one")])
        self.assertEqual(
            turns(two),
            [
                ("user", "bob: @assistant one"),
                ("assistant", "first answer"),
                ("user", "carol: @assistant two"),
            ],
        )

    async def test_context_is_the_rooms_latest_messages(self) -> None:
        async with RoomListener("lobby") as room:
            for index in range(5):
                await self.say("alice", f"note {index}")
            question = await self.say("bob", "@assistant sum up")
            await room.receive_until(reply_to(question))
        [body] = self.server.bodies
        self.assertEqual(  # ROOM_ASSISTANT_CONTEXT_MESSAGES=4 in the worker
            turns(body),
            [
                ("user", "alice: note 2"),
                ("user", "alice: note 3"),
                ("user", "alice: note 4"),
                ("user", "bob: @assistant sum up"),
            ],
        )

    async def test_a_message_without_the_mention_asks_nothing(self) -> None:
        async with RoomListener("lobby") as room:
            await self.say("alice", "hello everyone")
            await self.say("alice", "is the @assistant here?")
            question = await self.say("bob", "  @Assistant hello")
            frames = await room.receive_until(reply_to(question))
        authors = [f["message"]["author"] for f in frames if f["type"] == "message"]
        self.assertEqual(authors, ["alice", "alice", "bob", "assistant"])
        self.assertEqual([r.reply_to_id for r in await self.assistant_rows()], [question["id"]])
        self.assertEqual(self.server.request_count(), 1)


class RateLimitTests(RoomAssistantTestCase):
    """ROOM_ASSISTANT_RATE_LIMIT counts per room (checked on the web side, in this process)."""

    async def test_a_room_over_its_limit_is_told_and_another_room_is_not(self) -> None:
        side = await sync_to_async(room_create)(slug="side", title="Side")
        with self.settings(ROOM_ASSISTANT_RATE_LIMIT=1, CHAT_RATE_WINDOW=3600):
            async with RoomListener("lobby") as lobby, RoomListener("side") as other:
                first = await self.say("bob", "@assistant first")
                refused = await self.say("bob", "@assistant again")
                elsewhere = await self.say("eve", "@assistant over here", room=side)
                frames = await lobby.receive_until_all(of_type("error"), reply_to(first))
                other_frames = await other.receive_until(reply_to(elsewhere))

        [error] = [f for f in frames if f["type"] == "error"]
        self.assertEqual((error["code"], error["reply_to"]), ("rate_limited", refused["id"]))
        self.assertGreater(error["retry_after"], 0)
        self.assertTrue(error["message"])
        self.assertIn(refused["id"], [f["message"]["id"] for f in frames if f["type"] == "message"])
        self.assertEqual([r.reply_to_id for r in await self.assistant_rows()], [first["id"]])
        self.assertEqual(other_frames[-1]["message"]["text"], "echo: eve: @assistant over here")
        self.assertEqual(self.server.request_count(), 2)

    async def test_a_retry_counts_against_the_rooms_limit(self) -> None:
        failed = [await self.failed_reply(f"@assistant q{i}") for i in range(2)]
        with self.settings(ROOM_ASSISTANT_RATE_LIMIT=1, CHAT_RATE_WINDOW=3600):
            async with RoomListener("lobby") as room:
                await sync_to_async(room_reply_retry)(room=self.room, message_id=failed[0].pk)
                with self.assertRaises(AppError) as refused:
                    await sync_to_async(room_reply_retry)(room=self.room, message_id=failed[1].pk)
                frames = await room.receive_until(
                    lambda f: f["type"] == "reply" and f["message"]["id"] == failed[0].pk
                )
        self.assertEqual(refused.exception.code, "rate_limited")
        self.assertEqual([f["type"] for f in frames].count("retrying"), 1)
        await sync_to_async(failed[1].refresh_from_db)()
        self.assertEqual(failed[1].status, "failed")

    async def failed_reply(self, text: str) -> RoomMessage:
        """A question whose reply already failed (rows written directly, no inference)."""

        def create() -> RoomMessage:
            question = RoomMessage.objects.create(room=self.room, author="bob", text=text)
            return RoomMessage.objects.create(
                room=self.room, author=ASSISTANT_NAME, status="failed", reply_to=question
            )

        return await sync_to_async(create)()


class FailureTests(RoomAssistantTestCase):
    """Exhausted retries show in the room as an error on the request; a retry recovers."""

    worker_env = FAST_RETRIES

    async def test_exhausted_retries_send_inference_failed_and_retry_recovers(self) -> None:
        self.server.script(Fail(500), Fail(503), Fail(500))
        async with RoomListener("lobby") as room:
            question = await self.say("dave", "@assistant doomed")
            frames = await room.receive_until(of_type("error"))
            error = frames[-1]
            self.assertEqual(
                (error["code"], error["reply_to"]), ("inference_failed", question["id"])
            )
            self.assertTrue(error["message"])
            [stored] = await self.assistant_rows()
            self.assertEqual(
                (stored.pk, stored.status, stored.attempt), (error["message_id"], "failed", 3)
            )

            retried = await sync_to_async(room_reply_retry)(
                room=self.room,
                message_id=question["id"],  # the question names its reply too
            )
            self.assertEqual((retried.pk, retried.status), (stored.pk, "pending"))
            frames = await room.receive_until(reply_to(question))

        retrying = [f["message"] for f in frames if f["type"] == "retrying"]
        self.assertEqual([(m["id"], m["status"]) for m in retrying], [(stored.pk, "pending")])
        reply = frames[-1]["message"]
        self.assertEqual((reply["id"], reply["text"]), (stored.pk, "echo: dave: @assistant doomed"))
        self.assertEqual(len(await self.assistant_rows()), 1)

    async def test_a_failed_reply_is_left_out_of_the_next_prompt(self) -> None:
        self.server.script(Fail(400))
        async with RoomListener("lobby") as room:
            await self.say("dave", "@assistant first")
            await room.receive_until(of_type("error"))
            question = await self.say("dave", "@assistant second")
            await room.receive_until(reply_to(question))
        self.assertEqual(
            turns(self.server.bodies[-1]),
            [("user", "dave: @assistant first"), ("user", "dave: @assistant second")],
        )

    async def test_retry_refuses_bad_ids_other_rooms_and_settled_replies(self) -> None:
        def rows() -> tuple[RoomMessage, RoomMessage]:
            other = room_create(slug="other", title="Other")
            question = RoomMessage.objects.create(room=other, author="bob", text="@assistant x")
            done = RoomMessage.objects.create(
                room=self.room, author=ASSISTANT_NAME, text="fine", status="done"
            )
            return question, done

        elsewhere, done = await sync_to_async(rows)()
        for message_id, code in [
            ("7", "invalid_message_id"),
            (True, "invalid_message_id"),
            (elsewhere.pk, "not_found"),
            (done.pk, "not_retryable"),
        ]:
            with self.subTest(message_id=message_id), self.assertRaises(ChatError) as raised:
                await sync_to_async(room_reply_retry)(room=self.room, message_id=message_id)
            self.assertEqual(raised.exception.code, code)


class StopTests(RoomAssistantTestCase):
    """The member who asked, or staff, stops an @assistant reply; the room sees `stopped`."""

    async def stop_mid_stream(self, *, member: str, staff: bool = False) -> list[Frame]:
        self.server.script(slow_reply())
        async with RoomListener("lobby") as room:
            question = await self.say("bob", "@assistant tell a long story")
            await room.receive_until(of_type("delta"))
            await sync_to_async(room_reply_stop)(
                room=self.room, message_id=question["id"], member=member, staff=staff
            )
            return await room.receive_until(of_type("stopped"))

    async def test_the_asker_stops_the_reply_and_its_partial_text_is_kept(self) -> None:
        frames = await self.stop_mid_stream(member="bob")
        stopped = frames[-1]["message"]
        self.assertEqual((stopped["author"], stopped["status"]), (ASSISTANT_NAME, "stopped"))
        self.assertTrue("".join(slow_reply().chunks).startswith(stopped["text"]))
        self.assertTrue(stopped["text"])
        self.assertEqual(len(self.server.wait_for_closes(1)), 1)
        [row] = await self.assistant_rows()
        self.assertEqual((row.status, row.text), ("stopped", stopped["text"]))

    async def test_staff_may_stop_anyone_s_question(self) -> None:
        frames = await self.stop_mid_stream(member="carol", staff=True)
        self.assertEqual(frames[-1]["message"]["status"], "stopped")

    async def test_another_member_may_not_stop_it(self) -> None:
        self.server.script(Reply(["a ", "b"], delay=0.05))
        async with RoomListener("lobby") as room:
            question = await self.say("bob", "@assistant short one")
            with self.assertRaises(ChatError) as caught:
                await sync_to_async(room_reply_stop)(
                    room=self.room, message_id=question["id"], member="carol", staff=False
                )
            self.assertEqual(caught.exception.code, "forbidden")
            frames = await room.receive_until(reply_to(question))
        self.assertEqual(frames[-1]["message"]["text"], "a b")
