"""Writes of the assistant chat: sessions, messages, retries and reply generation."""

import contextlib
import logging
import math
import random
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import LockError

from chat.errors import ChatError
from chat.models import ChatMessage, ChatSession, session_group_name
from chat.providers import PromptMessage, ProviderError, get_provider
from chat.selectors import chat_context_messages, chat_reply_next_pending
from chat.serializers import message_data
from chat.validation import validate_client_id, validate_name, validate_text
from chatsite.broadcast import broadcast_sync
from chatsite.credentials import credential_hash, credential_new, credential_prefix
from chatsite.redis_clients import get_redis

logger = logging.getLogger(__name__)

LOCK_BUSY_RETRY_SECONDS = 1.0

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
        if client_id is not None:
            existing = _message_by_client_id(session_id=session_id, client_id=client_id)
            if existing is not None:
                _reply_requeue_if_pending(message=existing)
                return existing, False
        try:
            with transaction.atomic():
                message = ChatMessage.objects.create(
                    session_id=session_id, role=ChatMessage.Role.USER, text=text,
                    status=Status.DONE, client_id=client_id,
                )  # fmt: skip
        except IntegrityError:
            # A concurrent frame with the same client_id won the race.
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
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatError("invalid_message_id", "message_id must be a number.", field="message_id")
    with transaction.atomic():
        _session_touch(session_id=session_id)
        message = ChatMessage.objects.filter(session_id=session_id, pk=message_id).first()
        if message is not None and message.role == ChatMessage.Role.USER:
            message = message.replies.order_by("id").first()
        if message is None:
            raise ChatError("not_found", "No such message.", field="message_id", status=404)
        requeued = ChatMessage.objects.filter(pk=message.pk, status=Status.FAILED).update(
            status=Status.PENDING, text="", error="", next_attempt_at=None
        )
        if not requeued:
            raise ChatError("not_retryable", "Only a failed reply can be retried.")
        message.refresh_from_db()
        payload = {"type": "retrying", "message": message_data(message)}
        transaction.on_commit(lambda: broadcast_sync(session_group_name(session_id), payload))
        transaction.on_commit(lambda: _reply_enqueue(message.pk))
    return message


# --- reply generation (runs in the Celery worker) -------------------------------------------


def chat_reply_generate(*, reply_id: int) -> float | None:
    """Generate the session's pending replies in order, this one among them.

    One worker at a time holds a session's lock and answers its pending replies oldest
    first, so replies follow the questions and each sees the replies before it. Returns
    None when this reply is settled, or the seconds after which to call again (the lock
    is busy, or the next reply waits out a backoff).
    """
    reply = ChatMessage.objects.filter(pk=reply_id, role=ChatMessage.Role.ASSISTANT).first()
    if reply is None or reply.status in (Status.DONE, Status.FAILED):
        return None
    lock = get_redis().lock(
        f"chat:session:{reply.session_id}:replying",
        timeout=settings.CHAT_REPLY_LOCK_TTL,
        thread_local=False,
    )
    if not lock.acquire(blocking=False):
        return LOCK_BUSY_RETRY_SECONDS
    try:
        while (pending := chat_reply_next_pending(session_id=reply.session_id)) is not None:
            if pending.next_attempt_at and pending.next_attempt_at > timezone.now():
                return (pending.next_attempt_at - timezone.now()).total_seconds()
            try:
                _reply_attempt(reply=pending, lock=lock)
            except LockError:
                raise
            except Exception:
                logger.exception("generating reply %s crashed", pending.pk)
                chat_reply_abandon(
                    reply_id=pending.pk, reason="The assistant hit an internal error."
                )
        return None
    except LockError:
        logger.warning("lost the reply lock of session %s", reply.session_id)
        return LOCK_BUSY_RETRY_SECONDS
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _reply_attempt(*, reply: ChatMessage, lock: Any) -> None:
    """One inference attempt for one reply: stream deltas, then store the result."""
    attempt = reply.attempt + 1
    claimed = ChatMessage.objects.filter(
        pk=reply.pk, status__in=[Status.PENDING, Status.STREAMING], attempt=reply.attempt
    ).update(status=Status.STREAMING, attempt=attempt, next_attempt_at=None)
    if not claimed:
        return
    prompt = [PromptMessage("system", settings.INFERENCE_SYSTEM_PROMPT)] + [
        PromptMessage(m.role, m.text) for m in chat_context_messages(reply=reply)
    ]
    streamer = _DeltaStreamer(reply=reply, lock=lock)
    deadline = time.monotonic() + settings.INFERENCE_MAX_SECONDS
    try:
        for chunk in get_provider().stream(prompt):
            streamer.add(chunk)
            if time.monotonic() > deadline:
                raise ProviderError("The reply took too long.", retryable=True)
        streamer.flush()
        if not streamer.text.strip():
            raise ProviderError("The model returned an empty reply.", retryable=False)
    except ProviderError as exc:
        _reply_attempt_failed(reply=reply, attempt=attempt, exc=exc)
        return
    _reply_complete(reply=reply, attempt=attempt, text=streamer.text)


class _DeltaStreamer:
    """Coalesce chunks into deltas sent at most every CHAT_DELTA_INTERVAL seconds."""

    def __init__(self, *, reply: ChatMessage, lock: Any) -> None:
        self.reply = reply
        self.lock = lock
        self.group = session_group_name(reply.session_id)
        self.parts: list[str] = []
        self.pending: list[str] = []
        self.offset = 0
        self.last_flush = time.monotonic()
        self.last_extend = self.last_flush

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.pending.append(chunk)
        if time.monotonic() - self.last_flush >= settings.CHAT_DELTA_INTERVAL:
            self.flush()

    def flush(self) -> None:
        now = time.monotonic()
        if now - self.last_extend >= settings.CHAT_REPLY_LOCK_TTL / 3:
            self.lock.extend(settings.CHAT_REPLY_LOCK_TTL, replace_ttl=True)
            self.last_extend = now
        if not self.pending:
            return
        text = "".join(self.pending)
        broadcast_sync(
            self.group,
            {
                "type": "delta",
                "message_id": self.reply.pk,
                "reply_to": self.reply.reply_to_id,
                "offset": self.offset,
                "text": text,
            },
        )
        self.offset += len(text)
        self.pending.clear()
        self.last_flush = now


def _backoff_seconds(*, attempt: int, exc: ProviderError) -> float:
    if exc.retry_after is not None and math.isfinite(exc.retry_after):
        return min(max(0.0, exc.retry_after), settings.INFERENCE_BACKOFF_MAX)
    base = settings.INFERENCE_BACKOFF_BASE * 2 ** (attempt - 1)
    return min(base * random.uniform(0.8, 1.2), settings.INFERENCE_BACKOFF_MAX)


def _reply_attempt_failed(*, reply: ChatMessage, attempt: int, exc: ProviderError) -> None:
    """Schedule another attempt, or after the last one mark the reply failed and say so."""
    owned = ChatMessage.objects.filter(
        pk=reply.pk, status__in=[Status.PENDING, Status.STREAMING], attempt=attempt
    )
    if exc.retryable and attempt < settings.INFERENCE_MAX_ATTEMPTS:
        delay = _backoff_seconds(attempt=attempt, exc=exc)
        logger.info(
            "reply %s attempt %s failed (%s); retry in %.1fs", reply.pk, attempt, exc, delay
        )
        owned.update(
            status=Status.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            error=str(exc),
        )
        return
    logger.warning("reply %s failed after %s attempts: %s", reply.pk, attempt, exc)
    with transaction.atomic():
        if not owned.update(status=Status.FAILED, text="", error=str(exc)):
            return
        payload = {
            "type": "error",
            "code": "inference_failed",
            "message": f"The assistant could not answer: {exc}",
            "message_id": reply.pk,
            "reply_to": reply.reply_to_id,
        }
        transaction.on_commit(lambda: broadcast_sync(session_group_name(reply.session_id), payload))


def chat_reply_abandon(*, reply_id: int, reason: str) -> None:
    """Mark an unfinished reply failed after an unexpected error, and tell the client."""
    reply = ChatMessage.objects.filter(pk=reply_id, role=ChatMessage.Role.ASSISTANT).first()
    if reply is None or reply.status in (Status.DONE, Status.FAILED):
        return
    _reply_attempt_failed(
        reply=reply, attempt=reply.attempt, exc=ProviderError(reason, retryable=False)
    )


def _reply_complete(*, reply: ChatMessage, attempt: int, text: str) -> None:
    """Store the finished reply if this attempt still owns the row, then send it."""
    with transaction.atomic():
        stored = ChatMessage.objects.filter(
            pk=reply.pk, status=Status.STREAMING, attempt=attempt
        ).update(text=text, status=Status.DONE, error="")
        if not stored:
            return
        reply.refresh_from_db()
        payload = {"type": "reply", "message": message_data(reply)}
        transaction.on_commit(lambda: broadcast_sync(session_group_name(reply.session_id), payload))
