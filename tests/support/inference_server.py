"""A scriptable inference server on 127.0.0.1 speaking the OpenAI and Hugging Face protocols.

Tests queue behaviours with `script(...)`; each request takes the next one, and with none
queued the server streams "echo: <last user text>". Every request body is recorded.
"""

import contextlib
import json
import select
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HF_PATH_PREFIX = "/hf/models/"


@dataclass
class Reply:
    """Answer with these chunks (SSE deltas for OpenAI, one generated_text for HF)."""

    chunks: list[str]
    delay: float = 0.0
    done_marker: bool = True


@dataclass
class Fail:
    """Answer with an HTTP error status, headers and JSON body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass
class Stall:
    """Send these chunks, then go silent for `seconds` (past the client's read timeout)."""

    seconds: float
    chunks: list[str] = field(default_factory=list)


Behaviour = Reply | Fail | Stall


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that takes a client hanging up as normal, not an error."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class InferenceServer:
    """A real HTTP server in a thread of the test process."""

    def __init__(self, *, chunked: bool = True) -> None:
        # chunked: HTTP/1.1 with chunked transfer, as vLLM, Ollama and OpenAI stream;
        # otherwise HTTP/1.0, the body ending when the connection closes.
        self.chunked = chunked
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() of each request's arrival
        self.closes: list[float] = []  # time.monotonic() when a client hung up mid-stream
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0  # the most answered at once since the last reset()
        self.default_delay = 0.0  # seconds between chunks of the default echo reply
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> "InferenceServer":
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        server = self

        class Handler(_Handler):
            owner = server
            protocol_version = "HTTP/1.1" if server.chunked else "HTTP/1.0"

        self._httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end any stall early, free the port."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "InferenceServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        """INFERENCE_URL for the openai provider."""
        return f"{self.url}/v1"

    @property
    def hf_url(self) -> str:
        """INFERENCE_URL for the huggingface provider."""
        return f"{self.url}{HF_PATH_PREFIX}test-model"

    # --- scripting and inspection ----------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def reset(self) -> None:
        """Forget recorded requests and queued behaviours (between tests)."""
        with self._lock:
            self.bodies.clear()
            self.times.clear()
            self.closes.clear()
            self.max_in_flight = self.in_flight
            self._script.clear()
            self.default_delay = 0.0

    def request_count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def wait_for_requests(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Block until at least `count` requests arrived; return their bodies."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.bodies) >= count, timeout=timeout):
                raise AssertionError(f"expected {count} inference requests, got {len(self.bodies)}")
            return list(self.bodies)

    def wait_for_closes(self, count: int = 1, timeout: float = 60.0) -> list[float]:
        """Block until clients hung up on `count` streams; return when each was seen."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.closes) >= count, timeout=timeout):
                raise AssertionError(f"expected {count} hang-ups, saw {len(self.closes)}")
            return list(self.closes)

    def _hung_up(self) -> None:
        with self._changed:
            self.closes.append(time.monotonic())
            self._changed.notify_all()

    def _flight(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _take(self, body: dict[str, Any]) -> Behaviour | None:
        with self._changed:
            self.bodies.append(body)
            self.times.append(time.monotonic())
            self._changed.notify_all()
            return self._script.popleft() if self._script else None

    def _pause(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _last_user_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        users = [m["content"] for m in body["messages"] if m.get("role") == "user"]
        return users[-1] if users else ""
    prompt = str(body.get("inputs", ""))
    users = [line[6:] for line in prompt.splitlines() if line.startswith("User: ")]
    return users[-1] if users else ""


class _Handler(BaseHTTPRequestHandler):
    owner: InferenceServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.owner._flight(+1)
        try:
            self._answer()
        finally:
            self.owner._flight(-1)

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        body["_authorization"] = self.headers.get("Authorization")
        behaviour = self.owner._take(body)
        if behaviour is None:
            words = f"echo: {_last_user_text(body)}".split(" ")
            behaviour = Reply(
                [w + " " for w in words[:-1]] + [words[-1]], delay=self.owner.default_delay
            )
        if self.path == "/v1/chat/completions":
            self._openai(behaviour)
        elif self.path.startswith(HF_PATH_PREFIX):
            self._huggingface(behaviour)
        else:
            self._json(404, {"error": "no such route"})

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _write(self, data: bytes) -> None:
        if self.owner.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.wfile.write(data)
        self.wfile.flush()

    def _sse(self, chunk: str) -> None:
        event = {"choices": [{"index": 0, "delta": {"content": chunk}}]}
        self._write(f"data: {json.dumps(event)}\n\n".encode())

    def _openai(self, behaviour: Behaviour) -> None:
        if isinstance(behaviour, Fail):
            self._json(behaviour.status, behaviour.body or {"error": "fail"}, behaviour.headers)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if self.owner.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._write(b": keep-alive comment\n\n")
            for chunk in behaviour.chunks:
                self._sse(chunk)
                delay = behaviour.delay if isinstance(behaviour, Reply) else 0.0
                if delay and self._hung_up_within(delay):
                    return
            if isinstance(behaviour, Stall):
                self._hung_up_within(behaviour.seconds)
                self.close_connection = True
                return
            if behaviour.done_marker:
                self._write(b"data: [DONE]\n\n")
            if self.owner.chunked:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _hung_up_within(self, seconds: float) -> bool:
        """Wait `seconds` between chunks, watching the client: True (and noted) if it hung up."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and not self.owner._stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], remaining)
            if not readable:
                return False
            try:
                peeked = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                peeked = b""
            if not peeked:
                self.owner._hung_up()
                self.close_connection = True
                return True
            self.owner._pause(remaining)  # the client sent more: nothing to watch for
        return False

    def _huggingface(self, behaviour: Behaviour) -> None:
        if isinstance(behaviour, Fail):
            self._json(behaviour.status, behaviour.body or {"error": "fail"}, behaviour.headers)
            return
        if isinstance(behaviour, Stall):
            self.owner._pause(behaviour.seconds)
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._json(200, [{"generated_text": "".join(behaviour.chunks)}])
