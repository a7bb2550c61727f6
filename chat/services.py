"""Writes of the assistant chat: sessions, messages, retries and reply generation."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from chat.errors import ChatError
from chat.models import ChatMessage, ChatSession, session_group_name
from chat.providers import PromptMessage
from chat.replies import ReplyKind, reply_named, reply_retry, reply_stop, validate_message_id
from chat.selectors import chat_context_messages
from chat.serializers import message_data
from chat.validation import validate_client_id, validate_name, validate_text
from chatsite.broadcast import broadcast_sync
from chatsite.credentials import credential_hash, credential_new, credential_prefix

Status = ChatMessage.Status


# --- sessions ------------------------------------------------------------------------------


def chat_session_create(*, name: Any) -> tuple[ChatSession, str]:
    """Create a session; returns it with its token, which is never stored or shown again."""
    name = validate_name(name)
    token = credential_new()
    now = timezone.now()
    session = ChatSession.objects.create(
        name=name,
        token_hash=credential_hash(token),
        token_prefix=credential_prefix(token),
        created_at=now,
        last_activity_at=now,
        expires_at=now + timedelta(seconds=settings.CHAT_SESSION_TTL),
    )
    return session, token


def _session_touch(*, session_id: int) -> None:
    """Count activity on an unexpired session (pushing its expiry out), or raise."""
    now = timezone.now()
    touched = ChatSession.objects.filter(pk=session_id, expires_at__gt=now).update(
        last_activity_at=now, expires_at=now + timedelta(seconds=settings.CHAT_SESSION_TTL)
    )
    if not touched:
        raise ChatError("session_expired", "This session has expired.", status=404)


def chat_session_refresh(*, session: ChatSession) -> ChatSession:
    """Extend an active session's expiry."""
    _session_touch(session_id=session.pk)
    session.refresh_from_db()
    return session


def chat_sessions_expire(*, session_ids: list[int]) -> int:
    """Expire sessions now (operators); returns how many."""
    now = timezone.now()
    return ChatSession.objects.filter(pk__in=session_ids, expires_at__gt=now).update(expires_at=now)


# --- messages ------------------------------------------------------------------------------


def chat_message_create(
    *, session_id: int, text: Any, client_id: Any = None, origin_channel: str | None = None
) -> tuple[ChatMessage, bool]:
    """Store a user message and its pending reply, then queue the reply after commit.

    Returns (message, created). A client_id seen before returns the original message.
    """
    text = validate_text(text)
    client_id = validate_client_id(client_id)
    with transaction.atomic():
        _session_touch(session_id=session_id)
        try:  # a repeated client_id is caught by the unique constraint: no look-up first
            with transaction.atomic():
                message = ChatMessage.objects.create(
                    session_id=session_id, role=ChatMessage.Role.USER, text=text,
                    status=Status.DONE, client_id=client_id,
                )  # fmt: skip
        except IntegrityError:
            # This client_id was stored before (a resend, or a concurrent frame).
            existing = _message_by_client_id(session_id=session_id, client_id=client_id)
            if existing is None:
                raise
            _reply_requeue_if_pending(message=existing)
            return existing, False
        reply = ChatMessage.objects.create(
            session_id=session_id, role=ChatMessage.Role.ASSISTANT, status=Status.PENDING,
            reply_to=message,
        )  # fmt: skip
        payload = {"type": "message", "message": message_data(message)}
        transaction.on_commit(
            lambda: broadcast_sync(
                session_group_name(session_id), payload, skip_channel=origin_channel
            )
        )
        transaction.on_commit(lambda: _reply_enqueue(reply.pk))
    return message, True


def _message_by_client_id(*, session_id: int, client_id: str | None) -> ChatMessage | None:
    return ChatMessage.objects.filter(session_id=session_id, client_id=client_id).first()


def _reply_requeue_if_pending(*, message: ChatMessage) -> None:
    """A resent message whose reply never started may have lost its task: queue it again.

    (The process could have died between the commit and the queueing.) A second task for
    the same reply is harmless: replies are claimed under the session lock.
    """
    pending = message.replies.filter(status=Status.PENDING).values_list("pk", flat=True).first()
    if pending is not None:
        transaction.on_commit(lambda: _reply_enqueue(pending))


def _reply_enqueue(reply_id: int) -> None:
    from chat.tasks import generate_reply

    generate_reply.delay(reply_id)


def chat_reply_retry(*, session_id: int, message_id: Any) -> ChatMessage:
    """Put a failed reply (named by its id or its question's id) back in the queue."""
    message_id = validate_message_id(message_id)
    with transaction.atomic():
        _session_touch(session_id=session_id)
        return reply_retry(CHAT_REPLIES, conversation_id=session_id, message_id=message_id)


def chat_reply_stop(*, session_id: int, message_id: Any) -> ChatMessage:
    """Stop a pending or streaming reply (named by its id or its question's id)."""
    message_id = validate_message_id(message_id)
    with transaction.atomic():
        _session_touch(session_id=session_id)
        reply = reply_named(CHAT_REPLIES, conversation_id=session_id, message_id=message_id)
        reply_stop(CHAT_REPLIES, reply=reply)
    return reply


# --- reply generation (runs in the Celery worker; the pipeline is chat/replies.py) ---------


def _reply_prompt(reply: ChatMessage) -> list[PromptMessage]:
    """The system prompt, then the session's conversation up to the reply's question."""
    return [PromptMessage("system", settings.INFERENCE_SYSTEM_PROMPT)] + [
        PromptMessage(m.role, m.text) for m in chat_context_messages(reply=reply)
    ]


CHAT_REPLIES = ReplyKind(
    name="session",
    model=ChatMessage,
    conversation_field="session_id",
    reply_filter={"role": ChatMessage.Role.ASSISTANT},
    lock_key=lambda session_id: f"chat:session:{session_id}:replying",
    group=lambda reply: session_group_name(reply.session_id),
    prompt=_reply_prompt,
    serialize=message_data,
    enqueue=_reply_enqueue,
)
