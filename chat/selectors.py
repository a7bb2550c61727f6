"""Reads of chat sessions and messages."""

from django.conf import settings
from django.utils import timezone

from chat.errors import ChatError
from chat.models import ChatMessage, ChatSession
from chatsite.credentials import credential_hash

MAX_TOKEN_CHARS = 128


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

    Failed and unfinished replies are left out; the budget counts characters and messages.
    """
    candidates = (
        ChatMessage.objects.filter(session_id=reply.session_id, id__lt=reply.id)
        .exclude(role=ChatMessage.Role.ASSISTANT, status__in=_UNFINISHED)
        .order_by("-id")[: settings.CHAT_CONTEXT_MESSAGES]
    )
    picked: list[ChatMessage] = []
    budget = settings.CHAT_CONTEXT_CHARS
    for message in candidates:
        if picked and len(message.text) > budget:
            break
        picked.append(message)
        budget -= len(message.text)
    picked.reverse()
    return picked


def chat_reply_next_pending(*, session_id: int) -> ChatMessage | None:
    """The session's oldest reply still to be generated (replies go out in order)."""
    return (
        ChatMessage.objects.filter(
            session_id=session_id,
            role=ChatMessage.Role.ASSISTANT,
            status__in=[ChatMessage.Status.PENDING, ChatMessage.Status.STREAMING],
        )
        .order_by("id")
        .first()
    )


_UNFINISHED = [ChatMessage.Status.PENDING, ChatMessage.Status.STREAMING, ChatMessage.Status.FAILED]
