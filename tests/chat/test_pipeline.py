"""The reply pipeline end to end: socket → service → real Celery worker → real HTTP → socket."""

import asyncio
import json
from typing import Any

import websockets
from asgiref.sync import sync_to_async

from chat.models import ChatMessage
from chat.services import chat_session_create
from tests.chatsite.test_web_process import WebProcess
from tests.support.cases import ORIGIN, TIMEOUT, SocketTestCase, receive_until
from tests.support.inference_server import Fail, InferenceServer, Reply, Stall
from tests.support.worker import CeleryWorker

FAST_RETRIES = {"INFERENCE_MAX_ATTEMPTS": "3", "INFERENCE_BACKOFF_BASE": "0.05"}


def is_reply(frame: dict[str, Any]) -> bool:
    return frame["type"] == "reply"


def replies_in(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["message"] for f in frames if f["type"] == "reply"]


class PipelineTestCase(SocketTestCase):
    """One inference server and worker(s) per class; a fresh session per test."""

    provider = "openai"
    workers = 1
    worker_env: dict[str, str] = {}

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = InferenceServer().start()
        cls.addClassCleanup(cls.server.stop)
        for index in range(cls.workers):
            worker = CeleryWorker(env=cls.env(), name=f"{cls.__name__}{index}")
            cls.addClassCleanup(worker.stop)
            worker.start()

    @classmethod
    def env(cls) -> dict[str, str]:
        url = cls.server.openai_url if cls.provider == "openai" else cls.server.hf_url
        return {
            "INFERENCE_PROVIDER": cls.provider,
            "INFERENCE_URL": url,
            "INFERENCE_MODEL": "test-model",
            "INFERENCE_TIMEOUT": "2",
            "CHAT_DELTA_INTERVAL": "0",
            **cls.worker_env,
        }

    def setUp(self) -> None:
        super().setUp()
        self.server.reset()
        self.session, self.token = chat_session_create(name="Ada")

    async def connect(self):
        socket = await self.open_socket(f"/ws/chat/{self.token}")
        history = await socket.receive_json_from(timeout=TIMEOUT)
        self.assertEqual(history["type"], "history")
        return socket

    async def ask(self, socket, text: str, client_id: str | None = None) -> dict[str, Any]:
        """Send a message and return the acked user message."""
        await socket.send_json_to({"type": "message", "text": text, "client_id": client_id})
        frames = await receive_until(socket, lambda f: f["type"] in ("ack", "error"))
        self.assertEqual(frames[-1]["type"], "ack", frames[-1])
        return frames[-1]["message"]

    async def stored_replies(self, question_id: int) -> list[ChatMessage]:
        return await sync_to_async(list)(ChatMessage.objects.filter(reply_to_id=question_id))


class StreamingTests(PipelineTestCase):
    """A reply streams as deltas, then arrives whole, to every socket of the session."""

    async def test_deltas_stream_in_order_and_add_up_to_the_stored_reply(self) -> None:
        self.server.script(Reply(["Hello", ", ", "world", "!"], delay=0.02))
        socket = await self.connect()
        question = await self.ask(socket, "greet me")
        frames = await receive_until(socket, is_reply)
        deltas = [f for f in frames if f["type"] == "delta"]
        self.assertEqual("".join(d["text"] for d in deltas), "Hello, world!")
        offsets = [d["offset"] for d in deltas]
        expected = [sum(len(d["text"]) for d in deltas[:i]) for i in range(len(deltas))]
        self.assertEqual(offsets, expected)
        reply = frames[-1]["message"]
        self.assertEqual((reply["text"], reply["status"]), ("Hello, world!", "done"))
        self.assertEqual(reply["reply_to"], question["id"])
        self.assertTrue(all(d["message_id"] == reply["id"] for d in deltas))
        self.assertTrue(all(d["reply_to"] == question["id"] for d in deltas))
        stored = await self.stored_replies(question["id"])
        self.assertEqual([(m.text, m.status) for m in stored], [("Hello, world!", "done")])

    async def test_prompt_carries_system_prompt_history_and_the_question(self) -> None:
        socket = await self.connect()
        await self.ask(socket, "first question")
        await receive_until(socket, is_reply)
        await self.ask(socket, "second question")
        await receive_until(socket, is_reply)
        roles = [(m["role"], m["content"]) for m in self.server.bodies[1]["messages"]]
        self.assertEqual(roles[0][0], "system")
        self.assertEqual(
            roles[1:],
            [
                ("user", "first question"),
                ("assistant", "echo: first question"),
                ("user", "second question"),
            ],
        )

    async def test_two_sockets_on_one_session_both_get_the_deltas_and_the_reply(self) -> None:
        self.server.script(Reply(["a", "b", "c"], delay=0.02))
        first = await self.connect()
        second = await self.connect()
        await self.ask(first, "for both tabs")
        for socket in (first, second):
            frames = await receive_until(socket, is_reply)
            deltas = "".join(f["text"] for f in frames if f["type"] == "delta")
            self.assertEqual(deltas, "abc")
            self.assertEqual(frames[-1]["message"]["text"], "abc")


class OrderingTests(PipelineTestCase):
    """Quick messages are answered in order, each with the replies before it in context."""

    async def test_replies_follow_the_messages_and_see_earlier_replies(self) -> None:
        count = 5
        self.server.script(*[Reply([f"answer {i}", " done"], delay=0.05) for i in range(count)])
        socket = await self.connect()
        questions = [await self.ask(socket, f"question {i}") for i in range(count)]
        frames = await receive_until(socket, lambda f: len(replies_in([f])) and
                                     f["message"]["reply_to"] == questions[-1]["id"])  # fmt: skip
        replies = replies_in(frames)
        self.assertEqual([r["reply_to"] for r in replies], [q["id"] for q in questions])
        self.assertEqual([r["text"] for r in replies], [f"answer {i} done" for i in range(count)])
        for index, body in enumerate(self.server.wait_for_requests(count)):
            context = [(m["role"], m["content"]) for m in body["messages"][1:]]
            expected = []
            for earlier in range(index):
                expected += [
                    ("user", f"question {earlier}"),
                    ("assistant", f"answer {earlier} done"),
                ]
            self.assertEqual(context, [*expected, ("user", f"question {index}")])


class SeveralWorkersTests(PipelineTestCase):
    """Ordering holds with two worker processes of two pool processes each."""

    workers = 2

    async def test_two_sessions_each_get_their_replies_in_order(self) -> None:
        self.server.default_delay = 0.02
        _, other_token = await sync_to_async(chat_session_create)(name="Bob")
        sockets = [await self.connect()]
        other = await self.open_socket(f"/ws/chat/{other_token}")
        await other.receive_json_from(timeout=TIMEOUT)
        sockets.append(other)
        asked = {0: [], 1: []}
        for round_ in range(4):
            for index, socket in enumerate(sockets):
                asked[index].append(await self.ask(socket, f"s{index} q{round_}"))
        for index, socket in enumerate(sockets):
            last = asked[index][-1]["id"]
            frames = await receive_until(
                socket, lambda f, last=last: is_reply(f) and f["message"]["reply_to"] == last
            )
            replies = replies_in(frames)
            self.assertEqual([r["reply_to"] for r in replies], [q["id"] for q in asked[index]])
            self.assertEqual(
                [r["text"] for r in replies], [f"echo: s{index} q{i}" for i in range(4)]
            )
        for body in self.server.bodies:
            users = [m["content"] for m in body["messages"] if m["role"] == "user"]
            answers = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
            self.assertEqual(answers, [f"echo: {u}" for u in users[:-1]])


class FailureTests(PipelineTestCase):
    """Errors from the inference API are retried; the last failure is shown and retryable."""

    worker_env = FAST_RETRIES

    async def test_server_errors_are_retried_until_a_reply_comes(self) -> None:
        self.server.script(Fail(500), Fail(502))
        socket = await self.connect()
        question = await self.ask(socket, "try hard")
        frames = await receive_until(socket, is_reply)
        self.assertEqual(frames[-1]["message"]["text"], "echo: try hard")
        self.assertEqual(self.server.request_count(), 3)
        stored = await self.stored_replies(question["id"])
        self.assertEqual([(m.status, m.attempt) for m in stored], [("done", 3)])

    async def test_exhausted_retries_send_inference_failed_and_retry_recovers(self) -> None:
        self.server.script(Fail(500), Fail(503), Fail(500))
        socket = await self.connect()
        question = await self.ask(socket, "doomed")
        frames = await receive_until(socket, lambda f: f["type"] == "error")
        error = frames[-1]
        self.assertEqual(error["code"], "inference_failed")
        self.assertEqual(error["reply_to"], question["id"])
        self.assertTrue(error["message"])
        [stored] = await self.stored_replies(question["id"])
        self.assertEqual((stored.status, stored.pk), ("failed", error["message_id"]))

        await socket.send_json_to({"type": "retry", "message_id": error["message_id"]})
        frames = await receive_until(socket, is_reply)
        self.assertIn("retrying", [f["type"] for f in frames])
        self.assertEqual(frames[-1]["message"]["id"], error["message_id"])
        self.assertEqual(frames[-1]["message"]["text"], "echo: doomed")
        self.assertEqual(len(await self.stored_replies(question["id"])), 1)

    async def test_client_errors_are_not_retried(self) -> None:
        self.server.script(Fail(401))
        socket = await self.connect()
        await self.ask(socket, "unauthorised")
        frames = await receive_until(socket, lambda f: f["type"] == "error")
        self.assertEqual(frames[-1]["code"], "inference_failed")
        self.assertEqual(self.server.request_count(), 1)

    async def test_429_waits_for_retry_after(self) -> None:
        self.server.script(Fail(429, headers={"Retry-After": "1"}))
        socket = await self.connect()
        await self.ask(socket, "slow down")
        await receive_until(socket, is_reply)
        first, second = self.server.times[:2]
        self.assertGreaterEqual(second - first, 0.9)

    async def test_a_stalled_stream_is_abandoned_and_restarted_from_offset_zero(self) -> None:
        self.server.script(Stall(seconds=60, chunks=["partial "]))
        socket = await self.connect()
        await self.ask(socket, "stall")
        frames = await receive_until(socket, is_reply)
        deltas = [f for f in frames if f["type"] == "delta"]
        self.assertEqual((deltas[0]["offset"], deltas[0]["text"]), (0, "partial "))
        restarts = [d for d in deltas[1:] if d["offset"] == 0]
        self.assertEqual(len(restarts), 1)
        self.assertEqual(frames[-1]["message"]["text"], "echo: stall")

    async def test_a_failed_reply_is_left_out_of_the_next_prompt(self) -> None:
        self.server.script(Fail(400))
        socket = await self.connect()
        await self.ask(socket, "first")
        await receive_until(socket, lambda f: f["type"] == "error")
        await self.ask(socket, "second")
        await receive_until(socket, is_reply)
        roles = [m["role"] for m in self.server.bodies[-1]["messages"]]
        self.assertEqual(roles, ["system", "user", "user"])


class HuggingFaceTests(PipelineTestCase):
    """The Hugging Face provider: 503 while the model loads is waited out."""

    provider = "huggingface"
    worker_env = FAST_RETRIES

    async def test_model_loading_503_is_retried_after_its_estimated_time(self) -> None:
        self.server.script(Fail(503, body={"error": "loading", "estimated_time": 1.0}))
        socket = await self.connect()
        await self.ask(socket, "wake up")
        frames = await receive_until(socket, is_reply)
        self.assertEqual(frames[-1]["message"]["text"], "echo: wake up")
        first, second = self.server.times[:2]
        self.assertGreaterEqual(second - first, 0.9)
        self.assertFalse(self.server.bodies[0]["parameters"]["return_full_text"])


class WorkerCrashTests(SocketTestCase):
    """A worker killed mid-reply: its lease runs out, the reply restarts and is stored once.

    The visibility timeout stays at its default (300 s): the recovery must come from the
    lease and the supervisor, within seconds.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server = InferenceServer().start()
        self.addCleanup(self.server.stop)
        self.session, self.token = chat_session_create(name="Ada")

    def worker(self) -> CeleryWorker:
        worker = CeleryWorker(
            env={
                "INFERENCE_PROVIDER": "openai",
                "INFERENCE_URL": self.server.openai_url,
                "CHAT_DELTA_INTERVAL": "0",
            },
            name="crash",
        )
        self.addCleanup(worker.stop)
        return worker.start()

    async def test_killed_worker_mid_reply_is_restarted_and_stored_once(self) -> None:
        self.server.script(Stall(seconds=120, chunks=["first attempt "]))
        first = await sync_to_async(self.worker)()
        socket = await self.open_socket(f"/ws/chat/{self.token}")
        await socket.receive_json_from(timeout=TIMEOUT)
        await socket.send_json_to({"type": "message", "text": "survive", "client_id": "k"})
        frames = await receive_until(socket, lambda f: f["type"] == "delta")
        self.assertEqual(frames[-1]["text"], "first attempt ")
        question_id = frames[-1]["reply_to"]

        await sync_to_async(first.kill)()
        await sync_to_async(self.worker)()
        frames = await receive_until(socket, is_reply, within=60)
        restart = next(f for f in frames if f["type"] == "delta")
        self.assertEqual((restart["offset"], restart["reply_to"]), (0, question_id))
        reply = frames[-1]["message"]
        self.assertEqual((reply["text"], reply["reply_to"]), ("echo: survive", question_id))
        stored = await sync_to_async(list)(ChatMessage.objects.filter(reply_to_id=question_id))
        self.assertEqual([(m.status, m.text) for m in stored], [("done", "echo: survive")])
        self.assertEqual(self.server.request_count(), 2)


def is_stopped(frame: dict[str, Any]) -> bool:
    return frame["type"] == "stopped"


def slow_reply(words: int = 200, delay: float = 0.05) -> Reply:
    """A reply long enough (words * delay seconds) to act on while it streams."""
    return Reply([f"w{i} " for i in range(words)], delay=delay)


class ConcurrencyTests(PipelineTestCase):
    """One worker streams many conversations' replies at once, each conversation in order."""

    async def test_twenty_conversations_stream_at_once_each_in_order_with_context(self) -> None:
        self.server.default_delay = 0.05  # "echo: question N of S" in 5 chunks, 0.25 s
        sessions = [await sync_to_async(chat_session_create)(name=f"p{n}") for n in range(20)]
        sockets = []
        for _, token in sessions:
            socket = await self.open_socket(f"/ws/chat/{token}")
            await socket.receive_json_from(timeout=TIMEOUT)
            sockets.append(socket)

        async def converse(number: int, socket: Any) -> list[dict[str, Any]]:
            for index in range(3):
                await socket.send_json_to(
                    {"type": "message", "text": f"q{index} of s{number}", "client_id": f"c{index}"}
                )
            replies: list[dict[str, Any]] = []
            acks: dict[str, int] = {}

            def all_in(frame: dict[str, Any]) -> bool:
                replies.extend(replies_in([frame]))
                if frame["type"] == "ack":
                    acks[frame["client_id"]] = frame["message"]["id"]
                return len(replies) == len(acks) == 3

            await receive_until(socket, all_in, within=120)
            questions = [acks[f"c{index}"] for index in range(3)]
            self.assertEqual([r["reply_to"] for r in replies], questions)
            return replies

        results = await asyncio.gather(*(converse(n, s) for n, s in enumerate(sockets)))
        for number, replies in enumerate(results):
            self.assertEqual(
                [r["text"] for r in replies], [f"echo: q{i} of s{number}" for i in range(3)]
            )
        prompts = {}
        for body in self.server.wait_for_requests(60):
            turns = [(m["role"], m["content"]) for m in body["messages"][1:]]
            prompts[turns[-1][1]] = turns
        for number in range(20):
            self.assertEqual(
                prompts[f"q2 of s{number}"],
                [
                    ("user", f"q0 of s{number}"),
                    ("assistant", f"echo: q0 of s{number}"),
                    ("user", f"q1 of s{number}"),
                    ("assistant", f"echo: q1 of s{number}"),
                    ("user", f"q2 of s{number}"),
                ],
            )
        # Prefork with two processes could never have more than two streams open at once.
        self.assertGreaterEqual(self.server.max_in_flight, 10)


class StopTests(PipelineTestCase):
    """A stop cuts the model's stream, keeps the partial text and lets the next message go."""

    async def stream_then_stop(self, socket: Any, question: dict[str, Any]) -> dict[str, Any]:
        frames = await receive_until(socket, lambda f: f["type"] == "delta")
        await socket.send_json_to({"type": "stop", "message_id": frames[-1]["message_id"]})
        return (await receive_until(socket, is_stopped))[-1]["message"]

    async def test_stop_closes_the_upstream_and_stores_the_partial_text(self) -> None:
        self.server.script(slow_reply())
        socket, other = await self.connect(), await self.connect()
        question = await self.ask(socket, "tell me everything")
        stopped = await self.stream_then_stop(socket, question)

        self.assertEqual(len(self.server.wait_for_closes(1)), 1)  # the model saw the hang-up
        self.assertEqual((stopped["status"], stopped["reply_to"]), ("stopped", question["id"]))
        full = "".join(slow_reply().chunks)
        self.assertTrue(stopped["text"] and full.startswith(stopped["text"]), stopped["text"])
        self.assertLess(len(stopped["text"]), len(full))
        seen_by_other = (await receive_until(other, is_stopped))[-1]["message"]
        self.assertEqual(seen_by_other, stopped)
        [row] = await self.stored_replies(question["id"])
        self.assertEqual((row.status, row.text), ("stopped", stopped["text"]))

    async def test_the_next_message_is_answered_after_a_stop_with_the_partial_in_context(
        self,
    ) -> None:
        self.server.script(slow_reply())
        socket = await self.connect()
        stopped = await self.stream_then_stop(socket, await self.ask(socket, "first"))
        question = await self.ask(socket, "second")
        frames = await receive_until(socket, is_reply)
        self.assertEqual(frames[-1]["message"]["text"], "echo: second")
        body = self.server.wait_for_requests(2)[1]
        turns = [(m["role"], m["content"]) for m in body["messages"][1:]]
        self.assertEqual(
            turns, [("user", "first"), ("assistant", stopped["text"]), ("user", "second")]
        )
        self.assertEqual(frames[-1]["message"]["reply_to"], question["id"])

    async def test_stopping_a_reply_not_yet_started_cancels_it(self) -> None:
        self.server.script(slow_reply())
        socket = await self.connect()
        first = await self.ask(socket, "long one")
        await receive_until(socket, lambda f: f["type"] == "delta")
        second = await self.ask(socket, "never mind")
        await socket.send_json_to({"type": "stop", "message_id": second["id"]})
        stopped = (await receive_until(socket, is_stopped))[-1]["message"]
        self.assertEqual(
            (stopped["reply_to"], stopped["status"], stopped["text"]),
            (second["id"], "stopped", ""),
        )
        await socket.send_json_to({"type": "stop", "message_id": first["id"]})
        await receive_until(socket, is_stopped)
        third = await self.ask(socket, "third")
        frames = await receive_until(socket, is_reply)
        self.assertEqual(frames[-1]["message"]["reply_to"], third["id"])
        asked = [b["messages"][-1]["content"] for b in self.server.bodies]
        self.assertEqual(asked, ["long one", "third"])  # the cancelled one never reached it

    async def test_stopping_an_ended_or_unknown_reply_is_an_error_on_an_open_socket(self) -> None:
        socket = await self.connect()
        question = await self.ask(socket, "quick")
        await receive_until(socket, is_reply)
        for message_id, code in [
            (question["id"], "not_stoppable"),
            (10**9, "not_found"),
            ("x", "invalid_message_id"),
        ]:
            await socket.send_json_to({"type": "stop", "message_id": message_id})
            frames = await receive_until(socket, lambda f: f["type"] == "error")
            self.assertEqual(frames[-1]["code"], code)
        await socket.send_json_to({"type": "ping"})
        self.assertEqual((await socket.receive_json_from(timeout=TIMEOUT))["type"], "pong")


class ResumeTests(PipelineTestCase):
    """A socket opened while a reply streams gets the text so far, then the rest live."""

    async def test_a_socket_joining_mid_stream_gets_the_partial_then_the_rest_exactly(
        self,
    ) -> None:
        self.server.script(slow_reply(words=60, delay=0.05))
        first = await self.connect()
        await self.ask(first, "stream it")
        await receive_until(first, lambda f: f["type"] == "delta" and f["offset"] > 0)

        late = await self.open_socket(f"/ws/chat/{self.token}")
        history = await late.receive_json_from(timeout=TIMEOUT)
        reply_row = history["messages"][-1]
        self.assertEqual((reply_row["status"], reply_row["text"]), ("streaming", ""))
        frames = await receive_until(late, is_reply)
        deltas = [f for f in frames if f["type"] == "delta"]
        self.assertEqual(deltas[0]["offset"], 0)
        self.assertTrue(deltas[0]["text"])
        text = ""
        for delta in deltas:
            self.assertEqual(delta["offset"], len(text))  # no gap, no repeat
            text += delta["text"]
        self.assertEqual(text, "".join(slow_reply(words=60).chunks))
        self.assertEqual(frames[-1]["message"]["text"], text)


class RetryBudgetTests(PipelineTestCase):
    """A manual retry gets the whole attempt budget again."""

    worker_env = FAST_RETRIES  # three attempts

    async def test_a_retried_reply_gets_three_more_attempts(self) -> None:
        self.server.script(Fail(500), Fail(500), Fail(500), Fail(500), Fail(500))
        socket = await self.connect()
        question = await self.ask(socket, "persist")
        await receive_until(socket, lambda f: f["type"] == "error")
        await socket.send_json_to({"type": "retry", "message_id": question["id"]})
        frames = await receive_until(socket, is_reply)
        self.assertEqual(frames[-1]["message"]["text"], "echo: persist")
        [row] = await self.stored_replies(question["id"])
        self.assertEqual((row.status, row.attempt), ("done", 6))


class StopAcrossProcessesTests(PipelineTestCase):
    """A stop sent to another web process than the asker's reaches the worker all the same."""

    async def test_a_stop_on_a_second_web_process_stops_the_reply_everywhere(self) -> None:
        web = await sync_to_async(WebProcess)()
        self.addCleanup(web.stop)
        await sync_to_async(web.wait_listening)()
        self.server.script(slow_reply())
        here = await self.connect()
        question = await self.ask(here, "long story")
        delta = (await receive_until(here, lambda f: f["type"] == "delta"))[-1]

        async with websockets.connect(
            web.url(f"/ws/chat/{self.token}"), origin=ORIGIN.decode()
        ) as there:
            history = json.loads(await asyncio.wait_for(there.recv(), TIMEOUT))
            self.assertEqual(history["messages"][-1]["id"], delta["message_id"])
            await there.send(json.dumps({"type": "stop", "message_id": question["id"]}))
            while (frame := json.loads(await asyncio.wait_for(there.recv(), TIMEOUT)))[
                "type"
            ] != "stopped":
                self.assertIn(frame["type"], ("delta",))
        stopped = (await receive_until(here, is_stopped))[-1]["message"]
        self.assertEqual(frame["message"], stopped)
        self.assertEqual((stopped["id"], stopped["status"]), (delta["message_id"], "stopped"))
        self.assertEqual(len(self.server.wait_for_closes(1)), 1)
