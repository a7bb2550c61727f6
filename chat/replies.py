"""The assistant's reply pipeline, shared by every kind of conversation (sessions, rooms).

A reply is a row (status pending → streaming → done or failed) answering a question in a
conversation. One worker at a time holds a conversation's lock and answers its pending
replies oldest first, so replies follow the questions and each sees the replies before
it. Each attempt claims the row by bumping its `attempt` counter, and every later write
is conditional on that counter, so a stale worker (lock lost, task handed out twice)
never overwrites a newer attempt. A ReplyKind says where a kind of conversation keeps
its replies and how it prompts, groups and shows them; the wire frames are the same.
"""

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Task
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from redis.exceptions import LockError

from chat.errors import ChatError
from chat.message_base import ReplyStatus
from chat.providers import PromptMessage, ProviderError, get_provider
from chatsite.broadcast import broadcast_sync
from chatsite.redis_clients import get_redis

logger = logging.getLogger(__name__)

LOCK_BUSY_RETRY_SECONDS = 1.0
UNEXPECTED_ERROR_RETRY_SECONDS = 10

PENDING, STREAMING, DONE, FAILED = (
    ReplyStatus.PENDING,
    ReplyStatus.STREAMING,
    ReplyStatus.DONE,
    ReplyStatus.FAILED,
)
UNSETTLED = [PENDING, STREAMING]


@dataclass(frozen=True)
class ReplyKind:
    """One kind of conversation whose questions the assistant answers.

    model: the message model, with status, attempt, next_attempt_at, error, text and
    reply_to fields. conversation_field: its column naming the conversation ("session_id").
    reply_filter: the lookups that pick the assistant's rows among the model's messages.
    """

    name: str  # in log lines: "session", "room"
    model: type[models.Model]
    conversation_field: str
    reply_filter: dict[str, Any]
    lock_key: Callable[[int], str]  # conversation id → Redis key of its reply lock
    group: Callable[[Any], str]  # reply → channel-layer group of its conversation
    prompt: Callable[[Any], list[PromptMessage]]  # reply → the whole prompt, system first
    serialize: Callable[[Any], dict[str, Any]]  # message → its wire object
    enqueue: Callable[[int], None]  # reply id → queue its Celery task

    def replies(self) -> models.QuerySet:
        """Every assistant reply of this kind."""
        return self.model.objects.filter(**self.reply_filter)

    def conversation_id(self, message: Any) -> int:
        return getattr(message, self.conversation_field)

    def in_conversation(self, conversation_id: int) -> models.QuerySet:
        """The assistant replies of one conversation."""
        return self.replies().filter(**{self.conversation_field: conversation_id})


# --- retry (web side) ----------------------------------------------------------------------


def validate_message_id(message_id: Any) -> int:
    """A message id from a client frame, or ChatError(invalid_message_id)."""
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatError("invalid_message_id", "message_id must be a number.", field="message_id")
    return message_id


def reply_retry(kind: ReplyKind, *, conversation_id: int, message_id: int) -> Any:
    """Put a failed reply (named by its id or its question's id) back in the queue.

    Broadcasts {"type": "retrying", "message"} and queues the reply after commit.
    """
    with transaction.atomic():
        replies = kind.in_conversation(conversation_id)
        reply = replies.filter(pk=message_id).first()
        if reply is None:
            reply = replies.filter(reply_to_id=message_id).order_by("id").first()
        if reply is None:
            raise ChatError("not_found", "No such message.", field="message_id", status=404)
        requeued = kind.model.objects.filter(pk=reply.pk, status=FAILED).update(
            status=PENDING, text="", error="", next_attempt_at=None
        )
        if not requeued:
            raise ChatError("not_retryable", "Only a failed reply can be retried.")
        group = kind.group(reply)
        reply.refresh_from_db()
        payload = {"type": "retrying", "message": kind.serialize(reply)}
        transaction.on_commit(lambda: broadcast_sync(group, payload))
        transaction.on_commit(lambda: kind.enqueue(reply.pk))
    return reply


# --- generation (runs in the Celery worker) -------------------------------------------------


def reply_task_run(task: Task, kind: ReplyKind, *, reply_id: int) -> None:
    """The body of a reply's Celery task: generate, and retry the task while it must wait."""
    try:
        wait = reply_generate(kind, reply_id=reply_id)
    except Exception as exc:
        # A reply's own failures are settled inside the pipeline; what reaches here is the
        # infrastructure (database, Redis) failing: try again once it may be back.
        raise task.retry(countdown=UNEXPECTED_ERROR_RETRY_SECONDS, exc=exc) from exc
    if wait is not None:
        raise task.retry(countdown=max(0.05, wait))


def reply_generate(kind: ReplyKind, *, reply_id: int) -> float | None:
    """Generate the conversation's pending replies in order, this one among them.

    Returns None when this reply is settled, or the seconds after which to call again
    (the lock is busy, or the next reply waits out a backoff).
    """
    reply = kind.replies().filter(pk=reply_id).first()
    if reply is None or reply.status in (DONE, FAILED):
        return None
    conversation_id = kind.conversation_id(reply)
    lock = get_redis().lock(
        kind.lock_key(conversation_id), timeout=settings.CHAT_REPLY_LOCK_TTL, thread_local=False
    )
    if not lock.acquire(blocking=False):
        return LOCK_BUSY_RETRY_SECONDS
    try:
        while (pending := _next_pending(kind, conversation_id=conversation_id)) is not None:
            if pending.next_attempt_at and pending.next_attempt_at > timezone.now():
                return (pending.next_attempt_at - timezone.now()).total_seconds()
            try:
                _attempt(kind, reply=pending, lock=lock)
            except LockError:
                raise
            except Exception:
                logger.exception("generating reply %s crashed", pending.pk)
                reply_abandon(
                    kind, reply_id=pending.pk, reason="The assistant hit an internal error."
                )
        return None
    except LockError:
        logger.warning("lost the reply lock of %s %s", kind.name, conversation_id)
        return LOCK_BUSY_RETRY_SECONDS
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _next_pending(kind: ReplyKind, *, conversation_id: int) -> Any:
    """The conversation's oldest reply still to be generated (replies go out in order)."""
    return kind.in_conversation(conversation_id).filter(status__in=UNSETTLED).order_by("id").first()


def _attempt(kind: ReplyKind, *, reply: Any, lock: Any) -> None:
    """One inference attempt for one reply: stream deltas, then store the result."""
    attempt = reply.attempt + 1
    claimed = kind.model.objects.filter(
        pk=reply.pk, status__in=UNSETTLED, attempt=reply.attempt
    ).update(status=STREAMING, attempt=attempt, next_attempt_at=None)
    if not claimed:
        return
    prompt = kind.prompt(reply)
    streamer = _DeltaStreamer(kind, reply=reply, lock=lock)
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
        _attempt_failed(kind, reply=reply, attempt=attempt, exc=exc)
        return
    _complete(kind, reply=reply, attempt=attempt, text=streamer.text)


class _DeltaStreamer:
    """Coalesce chunks into deltas sent at most every CHAT_DELTA_INTERVAL seconds."""

    def __init__(self, kind: ReplyKind, *, reply: Any, lock: Any) -> None:
        self.reply = reply
        self.lock = lock
        self.group = kind.group(reply)
        self.parts: list[str] = []
        self.pending: list[str] = []
        self.offset = 0
        self.last_flush = 0.0  # the first chunk goes out at once; later ones are coalesced
        self.last_extend = time.monotonic()

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


def _attempt_failed(kind: ReplyKind, *, reply: Any, attempt: int, exc: ProviderError) -> None:
    """Schedule another attempt, or after the last one mark the reply failed and say so."""
    owned = kind.model.objects.filter(pk=reply.pk, status__in=UNSETTLED, attempt=attempt)
    if exc.retryable and attempt < settings.INFERENCE_MAX_ATTEMPTS:
        delay = _backoff_seconds(attempt=attempt, exc=exc)
        logger.info(
            "reply %s attempt %s failed (%s); retry in %.1fs", reply.pk, attempt, exc, delay
        )
        owned.update(
            status=PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            error=str(exc),
        )
        return
    logger.warning("reply %s failed after %s attempts: %s", reply.pk, attempt, exc)
    with transaction.atomic():
        if not owned.update(status=FAILED, text="", error=str(exc)):
            return
        group = kind.group(reply)
        payload = {
            "type": "error",
            "code": "inference_failed",
            "message": f"The assistant could not answer: {exc}",
            "message_id": reply.pk,
            "reply_to": reply.reply_to_id,
        }
        transaction.on_commit(lambda: broadcast_sync(group, payload))


def reply_abandon(kind: ReplyKind, *, reply_id: int, reason: str) -> None:
    """Mark an unfinished reply failed after an unexpected error, and tell the conversation."""
    reply = kind.replies().filter(pk=reply_id).first()
    if reply is None or reply.status in (DONE, FAILED):
        return
    _attempt_failed(
        kind, reply=reply, attempt=reply.attempt, exc=ProviderError(reason, retryable=False)
    )


def _complete(kind: ReplyKind, *, reply: Any, attempt: int, text: str) -> None:
    """Store the finished reply if this attempt still owns the row, then send it."""
    with transaction.atomic():
        stored = kind.model.objects.filter(pk=reply.pk, status=STREAMING, attempt=attempt).update(
            text=text, status=DONE, error=""
        )
        if not stored:
            return
        group = kind.group(reply)
        reply.refresh_from_db()
        payload = {"type": "reply", "message": kind.serialize(reply)}
        transaction.on_commit(lambda: broadcast_sync(group, payload))
