"""Reads of chat sessions and messages."""

from collections.abc import Iterable
from typing import TypeVar

from django.conf import settings
from django.utils import timezone

from chat.errors import ChatError
from chat.models import ChatMessage, ChatSession
from chatsite.credentials import credential_hash

MAX_TOKEN_CHARS = 128

M = TypeVar("M")  # a message model (anything with a `text`)


def chat_session_get_active(*, token: str) -> ChatSession:
    """The unexpired session for a token, or ChatError(not_found)."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise ChatError("not_found", "No such session, or it has expired.", status=404)
    session = ChatSession.objects.filter(
        token_hash=credential_hash(token), expires_at__gt=timezone.now()
    ).first()
    if session is None:
        raise ChatError("not_found", "No such session, or it has expired.", status=404)
    return session


def chat_messages_list(*, session_id: int, after_id: int | None = None) -> list[ChatMessage]:
    """The session's messages oldest first, or only those after after_id."""
    messages = ChatMessage.objects.filter(session_id=session_id)
    if after_id is not None:
        messages = messages.filter(id__gt=after_id)
    return list(messages.order_by("id"))


def chat_context_messages(*, reply: ChatMessage) -> list[ChatMessage]:
    """The conversation the reply answers: newest messages up to its question, within budget.

    Failed and unfinished replies are left out, and stopped ones that have no text (a
    stopped reply's partial text stays in, as the person saw it); the budget counts
    characters and messages.
    """
    candidates = (
        ChatMessage.objects.filter(session_id=reply.session_id, id__lt=reply.id)
        .exclude(role=ChatMessage.Role.ASSISTANT, status__in=_UNFINISHED)
        .exclude(role=ChatMessage.Role.ASSISTANT, status=ChatMessage.Status.STOPPED, text="")
        .order_by("-id")[: settings.CHAT_CONTEXT_MESSAGES]
    )
    return context_within_budget(candidates)


def context_within_budget(newest_first: Iterable[M]) -> list[M]:
    """Messages (newest first) cut to CHAT_CONTEXT_CHARS of text, returned oldest first.

    The newest message is always kept, however long; the cut keeps the context contiguous.
    """
    picked: list[M] = []
    budget = settings.CHAT_CONTEXT_CHARS
    for message in newest_first:
        if picked and len(message.text) > budget:
            break
        picked.append(message)
        budget -= len(message.text)
    picked.reverse()
    return picked


_UNFINISHED = [ChatMessage.Status.PENDING, ChatMessage.Status.STREAMING, ChatMessage.Status.FAILED]
