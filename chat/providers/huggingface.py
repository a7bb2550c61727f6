"""The Hugging Face Inference API, text-generation task."""

import math
from collections.abc import Iterator, Sequence

from django.conf import settings

from chat.providers.base import Cancel, PromptMessage, Provider, ProviderError

DEFAULT_URL = "https://api-inference.huggingface.co/models/{model}"


def render_prompt(messages: Sequence[PromptMessage]) -> str:
    """Flatten the chat into one text-generation prompt ending at the assistant's turn."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names.get(m.role, m.role)}: {m.content}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


class HuggingFaceProvider(Provider):
    """POST {"inputs", "parameters"}; the reply is [{"generated_text"}]; 503 while loading."""

    name = "huggingface"
    default_url = DEFAULT_URL

    def stream(self, messages: Sequence[PromptMessage], cancel: Cancel) -> Iterator[str]:
        """Yield the generated text (the task answers in one piece)."""
        url = settings.INFERENCE_URL or DEFAULT_URL.format(model=self.model)
        payload = {
            "inputs": render_prompt(messages),
            "parameters": {
                "max_new_tokens": settings.INFERENCE_MAX_TOKENS,
                "return_full_text": False,
            },
            "options": {"wait_for_model": False},
        }
        with cancel.attached(self.post(url, payload, stream=False)) as response:
            try:
                body = response.json()
            except ValueError as exc:
                raise ProviderError("The inference API sent bad JSON.", retryable=True) from exc
        if cancel.is_set():
            return
        if isinstance(body, dict):
            body = [body]
        try:
            text = body[0]["generated_text"]
        except (IndexError, KeyError, TypeError) as exc:
            raise ProviderError("The reply had no generated_text.", retryable=False) from exc
        yield str(text)

    def status_error(self, response) -> ProviderError:
        """503 "model is loading" carries estimated_time: wait that long before retrying."""
        if response.status_code == 503:
            try:
                estimated = float(response.json().get("estimated_time"))
            except (ValueError, TypeError, AttributeError):
                estimated = None
            if estimated is not None and math.isfinite(estimated):
                return ProviderError(
                    "The model is loading.", retryable=True, retry_after=max(0.0, estimated)
                )
        return super().status_error(response)
