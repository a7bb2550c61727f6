"""bench/standin_model.py, the stand-in model server, over real loopback connections."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from django.test import SimpleTestCase
from standin_model import StandinModel

TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def standin(**kwargs: float) -> AsyncIterator[StandinModel]:
    model = await StandinModel(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield model
    finally:
        await model.close()


def completion_request(text: str, *, stream: bool = True) -> bytes:
    body = json.dumps(
        {"model": "m", "stream": stream, "messages": [{"role": "user", "content": text}]}
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One HTTP chunk's payload (b"" for the last chunk)."""
    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def read_events(reader: asyncio.StreamReader) -> list[bytes]:
    """The server-sent events of one chunked response, to its last chunk."""
    events = []
    while chunk := await read_chunk(reader):
        events.append(chunk)
    return events


class StandinModelTests(SimpleTestCase):
    async def test_streams_the_tokens_then_done_on_a_kept_alive_connection(self) -> None:
        async with standin(tokens=5, token_delay=0.01) as model:
            reader, writer = await asyncio.open_connection("127.0.0.1", model.port)
            try:
                for n in (1, 2):
                    started = time.monotonic()
                    writer.write(completion_request(f"question {n}"))
                    async with asyncio.timeout(TIMEOUT):
                        status, headers = await read_head(reader)
                        events = await read_events(reader)
                    took = time.monotonic() - started
                    self.assertEqual(200, status)
                    self.assertEqual("chunked", headers["transfer-encoding"])
                    self.assertEqual("text/event-stream", headers["content-type"])
                    token = b'data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'
                    self.assertEqual([token] * 5 + [b"data: [DONE]\n\n"], events)
                    self.assertGreaterEqual(took, 5 * 0.01)  # the first token waits a delay too
            finally:
                writer.close()
            self.assertEqual(
                {"requests": 2, "completed": 2, "client_closed": 0, "failed": 0,
                 "tokens_sent": 10, "in_flight": 0, "max_in_flight": 1, "tokens": 5,
                 "token_delay": 0.01},
                model.stats(),
            )  # fmt: skip
            self.assertEqual(["question 1", "question 2"], [r.prompt for r in model.records])

    async def test_a_client_closing_mid_stream_is_seen_and_its_time_recorded(self) -> None:
        async with standin(tokens=10_000, token_delay=0.01) as model:
            reader, writer = await asyncio.open_connection("127.0.0.1", model.port)
            writer.write(completion_request("cut me off"))
            async with asyncio.timeout(TIMEOUT):
                await read_head(reader)
                self.assertIn(b"tok", await read_chunk(reader))
            closed_at = time.monotonic()
            writer.close()
            await model.wait_until(lambda: model.counts["client_closed"] == 1, TIMEOUT)
            record = model.records[0]
            self.assertEqual("client_closed", record.outcome)
            self.assertEqual("cut me off", record.prompt)
            assert record.ended_mono is not None and record.ended is not None
            self.assertGreaterEqual(record.ended_mono, closed_at)
            self.assertLess(record.ended_mono - closed_at, 1.0)  # seen at once, not at the end
            self.assertLess(record.tokens_sent, 10_000)
            self.assertEqual(0, model.in_flight)
            self.assertEqual(0, model.counts["completed"])

    async def test_many_streams_at_once_and_the_json_endpoints(self) -> None:
        async with standin(tokens=3, token_delay=0.05) as model:

            async def one(n: int) -> list[bytes]:
                reader, writer = await asyncio.open_connection("127.0.0.1", model.port)
                try:
                    writer.write(completion_request(f"q{n}"))
                    await read_head(reader)
                    return await read_events(reader)
                finally:
                    writer.close()

            async with asyncio.timeout(TIMEOUT):
                results = await asyncio.gather(*(one(n) for n in range(100)))
            self.assertTrue(all(len(events) == 4 for events in results))
            self.assertEqual(100, model.max_in_flight)

            reader, writer = await asyncio.open_connection("127.0.0.1", model.port)
            try:

                async def call(method: str, path: str) -> dict:
                    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    async with asyncio.timeout(TIMEOUT):
                        _, headers = await read_head(reader)
                        return json.loads(await reader.readexactly(int(headers["content-length"])))

                stats = await call("GET", "/stats")
                self.assertEqual((100, 100, 100), (stats["requests"], stats["completed"],
                                                   stats["max_in_flight"]))  # fmt: skip
                since = await call("GET", "/requests?since=99")
                self.assertEqual([100], [r["id"] for r in since["requests"]])
                self.assertEqual("completed", since["requests"][0]["outcome"])
                reset = await call("POST", "/reset")
                self.assertEqual((0, 0), (reset["requests"], reset["max_in_flight"]))
            finally:
                writer.close()
