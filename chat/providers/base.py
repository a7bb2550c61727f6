"""The inference provider interface and the HTTP error rules every provider shares."""

import contextlib
import email.utils
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import requests
import urllib3
from django.conf import settings

READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class PromptMessage:
    """One turn of the prompt: role is "system", "user" or "assistant"."""

    role: str
    content: str


class ProviderError(Exception):
    """An inference call that failed; retryable ones are tried again with backoff."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Cancel:
    """A reply's stop switch: set from any thread, it cuts the upstream stream at once.

    A thread blocked reading the model's response is woken by shutting the socket down
    (closing it from another thread would not wake a blocked recv on Linux).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()  # the response is never shut down while being closed
        self._response: requests.Response | None = None

    def is_set(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on a stop; True if stopped."""
        return self._event.wait(seconds)

    def set(self) -> None:
        """Ask for a stop: the upstream response, if one is open, is cut now."""
        with self._lock:
            self._event.set()
            if self._response is not None:
                abort_response(self._response)

    @contextlib.contextmanager
    def attached(self, response: requests.Response) -> Iterator[requests.Response]:
        """Use the upstream response, cut on a stop (at once if stopped already); close it."""
        with self._lock:
            self._response = response
            if self._event.is_set():
                abort_response(response)
        try:
            yield response
        finally:
            with self._lock:
                self._response = None
                response.close()


def abort_response(response: requests.Response) -> None:
    """Shut the response's socket down, so that a thread blocked reading it wakes now.

    The socket is reached through the public fileno() of urllib3's response; shutdown
    acts on the socket, so a duplicate descriptor serves. Without one, closing is the
    fallback (the reader then stops at its next chunk).
    """
    try:
        descriptor = os.dup(response.raw.fileno())
    except (OSError, ValueError, AttributeError):
        with contextlib.suppress(Exception):
            response.close()
        return
    with socket.socket(fileno=descriptor) as duplicate, contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


class Provider(ABC):
    """Streams a reply to a prompt as text chunks; raises ProviderError on failure."""

    name: str = "provider"
    default_url: str = ""  # used when INFERENCE_URL is empty; may name {model}

    def __init__(self) -> None:
        # One pooled HTTP session per process: no connection set-up per reply.
        self.http = requests.Session()
        self.timeout = settings.INFERENCE_TIMEOUT
        self.model = settings.INFERENCE_MODEL
        self.api_key = settings.INFERENCE_API_KEY

    @abstractmethod
    def stream(self, messages: Sequence[PromptMessage], cancel: Cancel) -> Iterator[str]:
        """Yield the reply's text in chunks; stop early (silently) once `cancel` is set."""

    def post(self, url: str, payload: dict, *, stream: bool) -> requests.Response:
        """POST JSON and turn transport failures and bad statuses into ProviderError."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            response = self.http.post(
                url, json=payload, headers=headers, stream=stream, timeout=self.timeout
            )
        except requests.Timeout as exc:
            raise ProviderError("The inference API timed out.", retryable=True) from exc
        except requests.RequestException as exc:
            raise ProviderError("The inference API is unreachable.", retryable=True) from exc
        if response.status_code >= 400:
            try:
                raise self.status_error(response)
            finally:
                response.close()
        return response

    def status_error(self, response: requests.Response) -> ProviderError:
        """Map an HTTP error status to a ProviderError (429 and 5xx are retryable)."""
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            return ProviderError("The inference API is rate limiting us.", retryable=True,
                                 retry_after=retry_after)  # fmt: skip
        if status >= 500:
            return ProviderError(f"The inference API failed ({status}).", retryable=True,
                                 retry_after=retry_after)  # fmt: skip
        return ProviderError(f"The inference API refused the request ({status}).", retryable=False)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def stream_lines(response: requests.Response, cancel: Cancel) -> Iterator[bytes]:
    """The body's lines as soon as each arrives; a stall or a cut is a retryable error.

    requests' iter_lines() waits for 512 bytes before it yields, which holds back small
    server-sent events; read1() returns whatever has arrived. A stop ends it silently.
    """
    pending = b""
    try:
        while not cancel.is_set() and (chunk := response.raw.read1(READ_SIZE, decode_content=True)):
            *lines, pending = (pending + chunk).split(b"\n")
            yield from lines
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        if cancel.is_set():
            return
        raise ProviderError("The inference stream broke off.", retryable=True) from exc
    if pending and not cancel.is_set():
        yield pending
