"""The inference provider interface and the HTTP error rules every provider shares."""

import email.utils
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


class Provider(ABC):
    """Streams a reply to a prompt as text chunks; raises ProviderError on failure."""

    name: str = "provider"

    def __init__(self) -> None:
        # One pooled HTTP session per process: no connection set-up per reply.
        self.http = requests.Session()
        self.timeout = settings.INFERENCE_TIMEOUT
        self.model = settings.INFERENCE_MODEL
        self.api_key = settings.INFERENCE_API_KEY

    @abstractmethod
    def stream(self, messages: Sequence[PromptMessage]) -> Iterator[str]:
        """Yield the reply's text in chunks."""

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


def stream_lines(response: requests.Response) -> Iterator[bytes]:
    """The body's lines as soon as each arrives; a stall or a cut is a retryable error.

    requests' iter_lines() waits for 512 bytes before it yields, which holds back small
    server-sent events; read1() returns whatever has arrived.
    """
    pending = b""
    try:
        while chunk := response.raw.read1(READ_SIZE, decode_content=True):
            *lines, pending = (pending + chunk).split(b"\n")
            yield from lines
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ProviderError("The inference stream broke off.", retryable=True) from exc
    if pending:
        yield pending
