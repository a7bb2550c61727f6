"""OpenAI-compatible chat completions with server-sent events (vLLM, Ollama, llama.cpp, TGI)."""

import json
from collections.abc import Iterator, Sequence

from django.conf import settings

from chat.providers.base import Cancel, PromptMessage, Provider, ProviderError, stream_lines

DEFAULT_URL = "https://api.openai.com/v1"


class OpenAIProvider(Provider):
    """POST {INFERENCE_URL}/chat/completions with stream: true."""

    name = "openai"
    default_url = DEFAULT_URL

    def stream(self, messages: Sequence[PromptMessage], cancel: Cancel) -> Iterator[str]:
        """Yield choices[0].delta.content of each SSE chunk until [DONE] or the stream ends."""
        url = (settings.INFERENCE_URL or DEFAULT_URL).rstrip("/") + "/chat/completions"
        payload = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": settings.INFERENCE_MAX_TOKENS,
        }
        with cancel.attached(self.post(url, payload, stream=True)) as response:
            for raw in stream_lines(response, cancel):
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = _content(data)
                if chunk:
                    yield chunk


def _content(data: str) -> str:
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ProviderError("The inference API sent a malformed chunk.", retryable=True) from exc
    if isinstance(event, dict) and "error" in event:
        raise ProviderError(f"The inference API reported: {event['error']}", retryable=True)
    try:
        return event["choices"][0].get("delta", {}).get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
