"""The inference providers against a real HTTP server on 127.0.0.1.

Each test starts the scriptable InferenceServer (tests/support/inference_server.py), points a
provider at it through settings, and consumes `provider.stream(...)` exactly as the reply
pipeline does. Nothing of the project is mocked.
"""

import email.utils
import gzip
import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

from django.test import SimpleTestCase, override_settings

from chat.providers import (
    Cancel,
    PromptMessage,
    Provider,
    ProviderError,
    get_provider,
    provider_class,
)
from chat.providers.base import parse_retry_after
from chat.providers.huggingface import HuggingFaceProvider
from chat.providers.offline import OfflineProvider
from chat.providers.openai import OpenAIProvider
from tests.support.inference_server import Fail, InferenceServer, QuietHTTPServer, Reply, Stall

PROMPT = [PromptMessage("system", "s"), PromptMessage("user", "hi")]
MAX_TOKENS = 77
STALL_TIMEOUT = 0.5  # INFERENCE_TIMEOUT for the stall tests: the stall itself lasts 5 s
STALL_SECONDS = 5.0


def provider_settings(url: str, **overrides: Any) -> override_settings:
    """Settings pointing the providers at `url`, with `overrides` on top."""
    return override_settings(
        **{
            "INFERENCE_URL": url,
            "INFERENCE_MODEL": "m",
            "INFERENCE_API_KEY": "k",
            "INFERENCE_TIMEOUT": 30.0,
            "INFERENCE_MAX_TOKENS": MAX_TOKENS,
            **overrides,
        }
    )


def run(
    name: str,
    url: str,
    messages: Sequence[PromptMessage] = PROMPT,
    **overrides: Any,
) -> list[str]:
    """Instantiate provider `name` pointed at `url` and consume its whole stream."""
    with provider_settings(url, **overrides):
        return list(provider_class(name)().stream(messages, Cancel()))


def run_until_error(name: str, url: str, **overrides: Any) -> tuple[list[str], ProviderError]:
    """Like run(), but expect a ProviderError: return the chunks before it and the error."""
    chunks: list[str] = []
    try:
        with provider_settings(url, **overrides):
            for chunk in provider_class(name)().stream(PROMPT, Cancel()):
                chunks.append(chunk)
    except ProviderError as exc:
        return chunks, exc
    raise AssertionError(f"{name} raised no ProviderError; it yielded {chunks!r}")


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class RawSSEServer:
    """A real HTTP server answering every POST with one fixed text/event-stream body.

    The InferenceServer only emits well-formed events; this one sends bytes verbatim.
    """

    def __init__(
        self, body: bytes, headers: dict[str, str] | None = None, status: int = 200
    ) -> None:
        raw = body
        extra = headers or {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        self._httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> "RawSSEServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    @property
    def openai_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"


class ServerTestCase(SimpleTestCase):
    """A fresh InferenceServer per test, stopped even when the test fails."""

    chunked = True  # HTTP/1.1 chunked transfer; False: HTTP/1.0, the body ends at close

    def setUp(self) -> None:
        super().setUp()
        self.server = InferenceServer(chunked=self.chunked).start()
        self.addCleanup(self.server.stop)

    def assertRetryable(self, exc: ProviderError) -> None:
        self.assertTrue(exc.retryable, f"expected a retryable error, got {exc!r}")

    def assertNotRetryable(self, exc: ProviderError) -> None:
        self.assertFalse(exc.retryable, f"expected a non-retryable error, got {exc!r}")


class OpenAIProviderTests(ServerTestCase):
    """OpenAI-compatible chat completions streamed as server-sent events."""

    def test_request_body_has_model_messages_stream_and_max_tokens(self):
        messages = [
            PromptMessage("system", "be brief"),
            PromptMessage("user", "first question"),
            PromptMessage("assistant", "first answer"),
            PromptMessage("user", "second question"),
        ]
        run("openai", self.server.openai_url, messages)
        [body] = self.server.bodies
        self.assertEqual(body["model"], "m")
        self.assertEqual(
            body["messages"],
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"},
            ],
        )
        self.assertIs(body["stream"], True)
        self.assertEqual(body["max_tokens"], MAX_TOKENS)

    def test_bearer_authorization_is_sent_with_the_api_key(self):
        run("openai", self.server.openai_url)
        self.assertEqual(self.server.bodies[0]["_authorization"], "Bearer k")

    def test_no_authorization_is_sent_when_the_api_key_is_empty(self):
        run("openai", self.server.openai_url, INFERENCE_API_KEY="")
        self.assertEqual(len(self.server.bodies), 1)
        self.assertIsNone(self.server.bodies[0]["_authorization"])

    def test_done_marker_ends_the_stream(self):
        raw = RawSSEServer(
            b'data: {"choices": [{"index": 0, "delta": {"content": "kept"}}]}\n\n'
            b"data: [DONE]\n\n"
            b'data: {"choices": [{"index": 0, "delta": {"content": "after done"}}]}\n\n'
        ).start()
        self.addCleanup(raw.stop)
        self.assertEqual(run("openai", raw.openai_url), ["kept"])

    # Known bug: stream_lines() reads response.raw.read1() without decode_content=True, so a
    # gzip-encoded stream (requests asks for gzip) yields its compressed bytes: no text at all.
    def test_gzip_encoded_stream_is_decoded(self):
        body = gzip.compress(
            b'data: {"choices": [{"index": 0, "delta": {"content": "unzipped"}}]}\n\n'
            b"data: [DONE]\n\n"
        )
        raw = RawSSEServer(body, headers={"Content-Encoding": "gzip"}).start()
        self.addCleanup(raw.stop)
        self.assertEqual(run("openai", raw.openai_url), ["unzipped"])

    def test_malformed_data_line_raises_retryable_error(self):
        raw = RawSSEServer(
            b": keep-alive\n\n"
            b'data: {"choices": [{"index": 0, "delta": {"content": "ok"}}]}\n\n'
            b"data: {this is not json\n\n"
            b"data: [DONE]\n\n"
        ).start()
        self.addCleanup(raw.stop)
        chunks, exc = run_until_error("openai", raw.openai_url)
        self.assertEqual(chunks, ["ok"])
        self.assertRetryable(exc)
        self.assertIn("malformed", str(exc))

    def test_error_event_in_the_stream_raises_retryable_error(self):
        raw = RawSSEServer(b'data: {"error": {"message": "overloaded"}}\n\n').start()
        self.addCleanup(raw.stop)
        chunks, exc = run_until_error("openai", raw.openai_url)
        self.assertEqual(chunks, [])
        self.assertRetryable(exc)
        self.assertIn("overloaded", str(exc))


class OpenAIStreamingTests(ServerTestCase):
    """The SSE stream read as it arrives, over HTTP/1.1 chunked transfer (vLLM, Ollama)."""

    def test_chunks_stream_in_order_and_join_to_the_full_text(self):
        self.server.script(Reply(["Hel", "lo, ", "wor", "ld!"]))
        chunks = run("openai", self.server.openai_url)
        self.assertEqual(chunks, ["Hel", "lo, ", "wor", "ld!"])
        self.assertEqual("".join(chunks), "Hello, world!")

    def test_stream_ending_without_done_marker_still_yields_its_text(self):
        self.server.script(Reply(["no ", "done ", "marker"], done_marker=False))
        self.assertEqual(run("openai", self.server.openai_url), ["no ", "done ", "marker"])

    def test_chunk_sent_before_a_stall_reaches_the_caller(self):
        self.server.script(Stall(seconds=STALL_SECONDS, chunks=["a"]))
        chunks, exc = run_until_error(
            "openai", self.server.openai_url, INFERENCE_TIMEOUT=STALL_TIMEOUT
        )
        self.assertEqual(chunks, ["a"])
        self.assertRetryable(exc)

    def test_a_stop_from_another_thread_cuts_a_blocked_read_at_once(self):
        self.server.script(Stall(seconds=STALL_SECONDS * 12, chunks=["a"]))
        cancel, chunks = Cancel(), []
        with provider_settings(self.server.openai_url):
            started = time.monotonic()
            for chunk in provider_class("openai")().stream(PROMPT, cancel):
                chunks.append(chunk)
                threading.Timer(0.1, cancel.set).start()  # the read now blocks on the stall
        self.assertEqual(chunks, ["a"])  # ended quietly: a stop is not an error
        self.assertLess(time.monotonic() - started, STALL_SECONDS)
        self.assertEqual(len(self.server.wait_for_closes(1)), 1)

    def test_the_response_exposes_the_socket_a_stop_shuts_down(self):
        # The contract abort_response relies on: the stream's fileno() is its TCP socket.
        attached = []

        class Recording(Cancel):
            def attached(self, response):
                attached.append(response)
                return super().attached(response)

        self.server.script(Reply(["x"]))
        with provider_settings(self.server.openai_url):
            for _ in provider_class("openai")().stream(PROMPT, Recording()):
                with socket.socket(fileno=os.dup(attached[0].raw.fileno())) as duplicate:
                    self.assertEqual(duplicate.type, socket.SOCK_STREAM)
        self.assertEqual(len(attached), 1)


class OpenAICloseDelimitedStreamingTests(OpenAIStreamingTests):
    """The same stream over HTTP/1.0, the body ending when the server closes."""

    chunked = False


class HTTPErrorRuleTests(ServerTestCase):
    """The HTTP error rules every provider shares, exercised through the openai provider."""

    def failure(self, behaviour: Fail | Stall, **overrides: Any) -> ProviderError:
        self.server.script(behaviour)
        _, exc = run_until_error("openai", self.server.openai_url, **overrides)
        # The error came from the server's answer, not from failing to reach it.
        self.assertEqual(self.server.request_count(), 1)
        return exc

    def test_429_with_retry_after_seconds_is_retryable_after_that_delay(self):
        exc = self.failure(Fail(429, headers={"Retry-After": "3"}))
        self.assertRetryable(exc)
        self.assertEqual(exc.retry_after, 3.0)

    def test_429_with_retry_after_http_date_waits_until_that_date(self):
        ahead = datetime.now(UTC) + timedelta(seconds=10)
        date = email.utils.format_datetime(ahead, usegmt=True)
        exc = self.failure(Fail(429, headers={"Retry-After": date}))
        self.assertRetryable(exc)
        self.assertIsNotNone(exc.retry_after)
        # HTTP dates have whole seconds, so up to 1 s is lost; the test takes well under 4 s.
        self.assertGreater(exc.retry_after, 5.0)
        self.assertLessEqual(exc.retry_after, 10.0)

    def test_500_is_retryable(self):
        exc = self.failure(Fail(500))
        self.assertRetryable(exc)
        self.assertIn("500", str(exc))
        self.assertIsNone(exc.retry_after)

    def test_502_is_retryable(self):
        exc = self.failure(Fail(502))
        self.assertRetryable(exc)
        self.assertIn("502", str(exc))

    def test_400_is_not_retryable(self):
        exc = self.failure(Fail(400, body={"error": "bad request"}))
        self.assertNotRetryable(exc)
        self.assertIn("400", str(exc))

    def test_401_is_not_retryable(self):
        exc = self.failure(Fail(401, body={"error": "bad key"}))
        self.assertNotRetryable(exc)
        self.assertIn("401", str(exc))

    def test_stall_past_the_timeout_is_retryable(self):
        self.server.script(Stall(seconds=STALL_SECONDS, chunks=["a"]))
        started = time.monotonic()
        _, exc = run_until_error("openai", self.server.openai_url, INFERENCE_TIMEOUT=STALL_TIMEOUT)
        self.assertRetryable(exc)
        self.assertLess(time.monotonic() - started, STALL_SECONDS - 1)
        self.assertEqual(self.server.request_count(), 1)

    def test_connection_refused_is_retryable(self):
        chunks, exc = run_until_error("openai", closed_port_url())
        self.assertEqual(chunks, [])
        self.assertRetryable(exc)
        self.assertIn("unreachable", str(exc))


class HuggingFaceProviderTests(ServerTestCase):
    """The Hugging Face text-generation API: one JSON reply, 503 while the model loads."""

    def test_request_body_has_prompt_and_generation_parameters(self):
        run("huggingface", self.server.hf_url, [*PROMPT[:1], PromptMessage("user", "what is 2+2")])
        [body] = self.server.bodies
        self.assertIn("what is 2+2", body["inputs"])
        self.assertTrue(body["inputs"].endswith("Assistant:"), body["inputs"])
        self.assertEqual(body["parameters"]["max_new_tokens"], MAX_TOKENS)
        self.assertIs(body["parameters"]["return_full_text"], False)

    def test_bearer_authorization_is_sent_with_the_api_key(self):
        run("huggingface", self.server.hf_url)
        self.assertEqual(self.server.bodies[0]["_authorization"], "Bearer k")

    def test_generated_text_is_yielded(self):
        self.server.script(Reply(["Four, ", "as usual."]))
        self.assertEqual(run("huggingface", self.server.hf_url), ["Four, as usual."])

    def test_503_while_loading_is_retryable_after_estimated_time(self):
        self.server.script(Fail(503, body={"error": "loading", "estimated_time": 7.5}))
        _, exc = run_until_error("huggingface", self.server.hf_url)
        self.assertRetryable(exc)
        self.assertEqual(exc.retry_after, 7.5)

    def test_reply_without_generated_text_is_not_retryable(self):
        # Fail with status 200 is simply a successful reply with a chosen JSON body.
        self.server.script(Fail(200, body=[{"summary_text": "not what we asked for"}]))
        _, exc = run_until_error("huggingface", self.server.hf_url)
        self.assertNotRetryable(exc)
        self.assertIn("generated_text", str(exc))

    def test_429_with_retry_after_seconds_is_retryable_after_that_delay(self):
        self.server.script(Fail(429, headers={"Retry-After": "3"}))
        _, exc = run_until_error("huggingface", self.server.hf_url)
        self.assertRetryable(exc)
        self.assertEqual(exc.retry_after, 3.0)

    def test_stall_past_the_timeout_is_retryable(self):
        self.server.script(Stall(seconds=STALL_SECONDS))
        started = time.monotonic()
        _, exc = run_until_error("huggingface", self.server.hf_url, INFERENCE_TIMEOUT=STALL_TIMEOUT)
        self.assertRetryable(exc)
        self.assertLess(time.monotonic() - started, STALL_SECONDS - 1)
        self.assertEqual(self.server.request_count(), 1)


class ParseRetryAfterTests(SimpleTestCase):
    """Retry-After header values: delay seconds or an HTTP date."""

    def test_number_of_seconds(self):
        self.assertEqual(parse_retry_after("3"), 3.0)
        self.assertEqual(parse_retry_after("2.5"), 2.5)

    def test_negative_number_is_clamped_to_zero(self):
        self.assertEqual(parse_retry_after("-4"), 0.0)

    def test_http_date_in_the_future_is_seconds_until_then(self):
        ahead = datetime.now(UTC) + timedelta(seconds=30)
        seconds = parse_retry_after(email.utils.format_datetime(ahead, usegmt=True))
        self.assertIsNotNone(seconds)
        self.assertGreater(seconds, 25.0)
        self.assertLessEqual(seconds, 30.0)

    def test_http_date_in_the_past_is_zero(self):
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), 0.0)

    def test_garbage_is_none(self):
        self.assertIsNone(parse_retry_after("soon, probably"))

    def test_none_and_empty_are_none(self):
        self.assertIsNone(parse_retry_after(None))
        self.assertIsNone(parse_retry_after(""))


@override_settings(OFFLINE_CHUNK_DELAY=0)
class OfflineProviderTests(SimpleTestCase):
    """The canned stand-in used when no inference API is configured."""

    def stream(self, messages: Sequence[PromptMessage]) -> list[str]:
        return list(provider_class("offline")().stream(messages, Cancel()))

    def test_yields_several_chunks(self):
        self.assertGreater(len(self.stream(PROMPT)), 3)

    def test_reply_echoes_the_last_user_text(self):
        messages = [
            PromptMessage("system", "s"),
            PromptMessage("user", "older question"),
            PromptMessage("assistant", "older answer"),
            PromptMessage("user", "where is the zebra?"),
        ]
        self.assertIn("where is the zebra?", "".join(self.stream(messages)))

    def test_reply_says_plainly_it_is_a_stand_in(self):
        self.assertIn("Offline stand-in", "".join(self.stream(PROMPT)))

    def test_reply_counts_earlier_assistant_replies(self):
        messages = [
            PromptMessage("system", "s"),
            PromptMessage("user", "one"),
            PromptMessage("assistant", "a1"),
            PromptMessage("user", "two"),
            PromptMessage("assistant", "a2"),
            PromptMessage("user", "three"),
        ]
        self.assertIn("I have 2 earlier replies", "".join(self.stream(messages)))

    def test_reply_counts_one_earlier_reply_in_the_singular(self):
        messages = [*PROMPT, PromptMessage("assistant", "a1"), PromptMessage("user", "again")]
        self.assertIn("I have 1 earlier reply ", "".join(self.stream(messages)))

    def test_reply_counts_no_earlier_replies_on_the_first_turn(self):
        self.assertIn("I have 0 earlier replies", "".join(self.stream(PROMPT)))


class ProviderRegistryTests(SimpleTestCase):
    """INFERENCE_PROVIDER names a module of chat.providers; get_provider caches per process."""

    def test_each_known_name_maps_to_its_provider_class(self):
        self.assertIs(provider_class("openai"), OpenAIProvider)
        self.assertIs(provider_class("huggingface"), HuggingFaceProvider)
        self.assertIs(provider_class("offline"), OfflineProvider)

    def test_unknown_name_is_a_clear_value_error(self):
        with self.assertRaisesMessage(ValueError, "chat/providers/nope.py"):
            provider_class("nope")

    def test_base_is_not_a_provider_name(self):
        with self.assertRaises(ValueError):
            provider_class("base")

    def test_non_identifier_is_not_a_provider_name(self):
        with self.assertRaises(ValueError):
            provider_class("openai.base")

    @override_settings(INFERENCE_PROVIDER="offline")
    def test_get_provider_returns_the_same_instance_twice(self):
        first = get_provider()
        self.assertIsInstance(first, Provider)
        self.assertIs(get_provider(), first)

    @override_settings(INFERENCE_PROVIDER="offline")
    def test_get_provider_is_offline_under_offline_setting(self):
        self.assertIsInstance(get_provider(), OfflineProvider)


class LoadingEstimateTests(SimpleTestCase):
    """A Hugging Face loading estimate that is not a sane number still means "retry"."""

    def test_nan_or_negative_estimated_time_is_retryable_without_a_bad_delay(self):
        import math

        for raw in (b'{"error": "loading", "estimated_time": NaN}',
                    b'{"error": "loading", "estimated_time": -5}'):  # fmt: skip
            with self.subTest(raw=raw):
                server = RawSSEServer(raw, status=503).start()
                self.addCleanup(server.stop)
                with (
                    override_settings(INFERENCE_URL=server.openai_url, INFERENCE_TIMEOUT=5),
                    self.assertRaises(ProviderError) as caught,
                ):
                    list(
                        provider_class("huggingface")().stream(
                            [PromptMessage("user", "x")], Cancel()
                        )
                    )
                self.assertTrue(caught.exception.retryable)
                delay = caught.exception.retry_after
                self.assertTrue(delay is None or (math.isfinite(delay) and delay >= 0))
