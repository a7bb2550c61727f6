"""Live events and the outbox: frames prepared once; writes inline, in order, lag capped.

The send here stands in for the ASGI server's send, which is not ours: one that completes
at once, as a server's does while the client reads, or that waits on a gate, as a server's
does once its write buffer is full.
"""

import asyncio
from typing import Any

from django.test import SimpleTestCase
from websockets.frames import Frame, Opcode

from chatsite.fanout import PREPARED_FRAME, LiveEvent, Outbox, live_payload

TIMEOUT = 10


def text(n: int) -> dict[str, Any]:
    return {"type": "websocket.send", "text": str(n)}


OVERFLOW = [{"type": "websocket.send", "text": "too slow"}, {"type": "websocket.close"}]


class ServerSend:
    """Records what is written; while `gate` is clear, each send waits for it."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.gate.wait()
        if self.fail:
            raise OSError("connection lost")
        self.written.append(message)


def outbox_for(send: ServerSend, limit: int = 100) -> Outbox:
    return Outbox(send, limit=limit, on_overflow=lambda: list(OVERFLOW))


class OutboxTests(SimpleTestCase):
    async def test_messages_are_written_at_once_while_the_socket_keeps_up(self) -> None:
        send = ServerSend()
        outbox = outbox_for(send)
        outbox.put([text(1), text(2)])
        outbox.put([text(3)])
        self.assertEqual(send.written, [text(1), text(2), text(3)])  # no await in between
        self.assertIsNone(outbox.writer)

    async def test_messages_behind_a_waiting_send_follow_it_in_order(self) -> None:
        send = ServerSend()
        outbox = outbox_for(send)
        send.gate.clear()
        outbox.put([text(1), text(2)])
        outbox.put([text(3)])
        self.assertEqual(send.written, [])
        send.gate.set()
        await asyncio.wait_for(outbox.writer, TIMEOUT)  # done once the backlog is written
        self.assertEqual(send.written, [text(1), text(2), text(3)])
        outbox.put([text(4)])  # caught up: inline again
        self.assertEqual(send.written[-1], text(4))

    async def test_a_send_that_waits_a_while_resumes_when_the_socket_drains(self) -> None:
        send = ServerSend()
        outbox = outbox_for(send)
        send.gate.clear()
        outbox.put([text(1), text(2)])
        await asyncio.sleep(0)  # one loop turn: the writer is now waiting on the gate
        self.assertFalse(outbox.writer.done())
        send.gate.set()
        await asyncio.wait_for(outbox.writer, TIMEOUT)
        self.assertEqual(send.written, [text(1), text(2)])

    async def test_a_socket_too_far_behind_gets_the_overflow_messages_instead(self) -> None:
        send = ServerSend()
        outbox = outbox_for(send, limit=3)
        send.gate.clear()
        outbox.put([text(1)])  # waiting in the server
        outbox.put([text(2), text(3), text(4)])
        self.assertFalse(outbox.closed)
        outbox.put([text(5)])  # four behind the waiting one: over the limit
        outbox.put([text(6)])  # after the overflow nothing more is taken
        send.gate.set()
        await asyncio.wait_for(outbox.writer, TIMEOUT)
        self.assertEqual(send.written, [text(1), *OVERFLOW])

    async def test_a_send_to_a_lost_socket_stops_the_outbox(self) -> None:
        send = ServerSend()
        outbox = outbox_for(send)
        send.fail = True
        outbox.put([text(1), text(2)])
        self.assertTrue(outbox.closed)
        send.fail = False
        outbox.put([text(3)])
        self.assertEqual(send.written, [])

    async def test_closing_cancels_a_waiting_send_and_drops_the_rest(self) -> None:
        send = ServerSend()
        outbox = outbox_for(send)
        send.gate.clear()
        outbox.put([text(1), text(2)])
        writer = outbox.writer
        outbox.close()
        with self.assertRaises(asyncio.CancelledError):
            await asyncio.wait_for(writer, TIMEOUT)
        send.gate.set()
        outbox.put([text(3)])
        self.assertEqual(send.written, [])


def framed(n: int) -> dict[str, Any]:
    return {**text(n), PREPARED_FRAME: str(n).encode()}


class ServerWrite:
    """The server's synchronous write: records frames while `open`, refuses otherwise."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.open = True

    def __call__(self, frame: bytes) -> bool:
        if self.open:
            self.log.append(frame)
        return self.open


class OutboxWriteTests(SimpleTestCase):
    async def test_prepared_frames_are_written_with_write_and_others_sent(self) -> None:
        send = ServerSend()
        write = ServerWrite(send.written)  # one log: the order on the wire
        outbox = Outbox(send, limit=100, on_overflow=lambda: list(OVERFLOW), write=write)
        outbox.put([framed(1), text(2), framed(3)])
        self.assertEqual(send.written, [b"1", text(2), b"3"])
        self.assertIsNone(outbox.writer)

    async def test_a_refused_write_is_sent_and_later_frames_wait_behind_it(self) -> None:
        send = ServerSend()
        write = ServerWrite(send.written)
        outbox = Outbox(send, limit=100, on_overflow=lambda: list(OVERFLOW), write=write)
        outbox.put([framed(1)])
        write.open = False  # not writable: the server's send waits for it
        send.gate.clear()
        outbox.put([framed(2)])
        write.open = True
        outbox.put([framed(3)])  # writable again, but 2 is still waiting
        send.gate.set()
        await asyncio.wait_for(outbox.writer, TIMEOUT)
        self.assertEqual(send.written, [b"1", framed(2), framed(3)])
        outbox.put([framed(4)])  # caught up: written directly again
        self.assertEqual(send.written[-1], b"4")


class LiveEventTests(SimpleTestCase):
    def test_each_message_carries_its_text_as_a_prepared_unmasked_frame(self) -> None:
        frames = ['{"n": 1}', '{"n": "é"}']
        event = LiveEvent(live_payload(frames, ["1-0", "2-0"]))
        self.assertEqual(event.ids, ["1-0", "2-0"])
        self.assertEqual([m["text"] for m in event.messages], frames)
        for message, frame in zip(event.messages, frames, strict=True):
            reader = _bytes_reader(message[PREPARED_FRAME])
            parsed = _parse(Frame.parse(reader, mask=False))
            self.assertEqual(parsed.data.decode(), frame)
            self.assertEqual(parsed.opcode, Opcode.TEXT)
            self.assertTrue(parsed.fin)


def _bytes_reader(data: bytes) -> Any:
    """A read_exact generator over data, as websockets' Frame.parse expects."""

    def read_exact(n: int) -> Any:
        nonlocal data
        chunk, data = data[:n], data[n:]
        assert len(chunk) == n
        return chunk
        yield  # a generator, never suspended

    return read_exact


def _parse(parser: Any) -> Frame:
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("the frame is incomplete")
