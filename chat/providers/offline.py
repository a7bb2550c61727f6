"""The built-in offline stand-in: streams a canned reply so the system runs with no model."""

from collections.abc import Iterator, Sequence

from django.conf import settings

from chat.providers.base import Cancel, PromptMessage, Provider

NOTICE = (
    "Offline stand-in: no inference API is configured, so replies are canned. "
    "Set INFERENCE_PROVIDER=openai (or huggingface) with INFERENCE_URL and INFERENCE_MODEL "
    "to talk to a real model (see README)."
)


class OfflineProvider(Provider):
    """Echo the question with a plain notice that this is not a model, word by word."""

    name = "offline"

    def stream(self, messages: Sequence[PromptMessage], cancel: Cancel) -> Iterator[str]:
        """Yield the stand-in reply in small chunks, paced like a real model."""
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        earlier = sum(1 for m in messages if m.role == "assistant")
        reply = (
            f"(Offline stand-in, not a real model.) You said: \u201c{question}\u201d. "
            f"I have {earlier} earlier repl{'y' if earlier == 1 else 'ies'} in this "
            "conversation. To get real answers, set INFERENCE_PROVIDER and INFERENCE_URL "
            "as the README shows."
        )
        words = reply.split(" ")
        for index, word in enumerate(words):
            if index and settings.OFFLINE_CHUNK_DELAY and cancel.wait(settings.OFFLINE_CHUNK_DELAY):
                return
            yield word if index == len(words) - 1 else word + " "
