"""The assistant's reply pipeline, shared by every kind of conversation (sessions, rooms).

A reply is a row (status pending → streaming → done, failed or stopped) answering a
question in a conversation. One worker thread at a time holds a conversation's lock and
answers its pending replies oldest first, so replies follow the questions and each sees
the replies before it. A task that finds the lock held leaves its reply to the holder,
which looks again after letting go: nothing polls a busy lock. Each attempt claims the
row by bumping its `attempt` counter, and every later write is conditional on that
counter, so a stale worker (lock lost, task handed out twice) never overwrites a newer
attempt. The lock is a short lease kept alive by the worker's supervisor thread
(chat/supervisor.py): when a worker dies, the lease runs out within seconds and the
supervisor of any live worker queues the reply again (replies_requeue_orphans).

While a reply streams, the text so far is kept in Redis, so a socket that connects
mid-stream starts from it (reply_partial). A stop is a Redis key plus a message on
STOP_CHANNEL: the worker generating the reply cuts the upstream stream and stores the
partial text as `stopped`. A ReplyKind says where a kind of conversation keeps its
replies and how it prompts, groups and shows them; the wire frames are the same.
"""

import contextlib
import json
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
from django.db import connections, models, transaction
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import LockError

from chat.errors import ChatError
from chat.inflight import IN_FLIGHT
from chat.message_base import ReplyStatus
from chat.providers import Cancel, PromptMessage, ProviderError, get_provider
from chatsite.fanout import live_channel, live_payload, live_publish_sync
from chatsite.redis_clients import RedisScript, get_redis

logger = logging.getLogger(__name__)

UNEXPECTED_ERROR_RETRY_SECONDS = 10
STOP_CHANNEL = "chat:reply-stop"  # published: "<kind>:<reply id>" of a reply to stop
STOP_REQUEST_TTL = 3600  # seconds a stop request waits for a worker to see it

PENDING, STREAMING, DONE, FAILED, STOPPED = (
    ReplyStatus.PENDING,
    ReplyStatus.STREAMING,
    ReplyStatus.DONE,
    ReplyStatus.FAILED,
    ReplyStatus.STOPPED,
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
    group: Callable[[Any], str]  # reply → its conversation's group (channel layer and live)
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

    def key(self, reply_id: int) -> str:
        """The reply's name across processes: "<kind>:<id>"."""
        return f"{self.name}:{reply_id}"


def _stop_key(kind: ReplyKind, reply_id: int) -> str:
    return f"chat:stop:{kind.key(reply_id)}"


def _partial_key(kind: ReplyKind, reply_id: int, attempt: int) -> str:
    return f"chat:partial:{kind.key(reply_id)}:{attempt}"


def reply_publish(group: str, payload: dict[str, Any]) -> None:
    """Send a reply frame to every socket of the conversation (the live fan-out, in order).

    Every frame of a reply's life (deltas, reply, stopped, retrying, inference_failed)
    goes through the conversation's live group, so sockets get them in the order they
    were published; the conversation's other events use the channel layer.
    """
    live_publish_sync(group, [json.dumps(payload)])


# A delta in one round trip: append it to the reply's partial text, then publish it, so a
# socket that reads the partial text and then hears deltas misses nothing. The event's id
# is the span it adds, "<reply id>:<attempt>:<start>:<end>" (chatsite/sockets.py).
_DELTA_SCRIPT = RedisScript(
    """
redis.call('APPEND', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('PUBLISH', KEYS[2], ARGV[3])
"""
)


def db_release() -> None:
    """Give back the caller's database connections (to the pool, on PostgreSQL).

    A reply holds none while it waits on the model, so hundreds of replies can stream
    on a handful of connections (each greenlet or thread has its own).
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


# --- web side: retry and stop --------------------------------------------------------------


def validate_message_id(message_id: Any) -> int:
    """A message id from a client frame, or ChatError(invalid_message_id)."""
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise ChatError("invalid_message_id", "message_id must be a number.", field="message_id")
    return message_id


def reply_named(kind: ReplyKind, *, conversation_id: int, message_id: int) -> Any:
    """The conversation's reply with this id, or answering the message with this id."""
    replies = kind.in_conversation(conversation_id)
    reply = replies.filter(pk=message_id).first()
    if reply is None:
        reply = replies.filter(reply_to_id=message_id).order_by("id").first()
    if reply is None:
        raise ChatError("not_found", "No such message.", field="message_id", status=404)
    return reply


def reply_retry(kind: ReplyKind, *, conversation_id: int, message_id: int) -> Any:
    """Put a failed reply (named by its id or its question's id) back in the queue.

    It gets the whole attempt budget again. Broadcasts {"type": "retrying", "message"}
    and queues the reply after commit.
    """
    with transaction.atomic():
        reply = reply_named(kind, conversation_id=conversation_id, message_id=message_id)
        requeued = kind.model.objects.filter(pk=reply.pk, status=FAILED).update(
            status=PENDING, text="", error="", next_attempt_at=None, retry_base=models.F("attempt")
        )
        if not requeued:
            raise ChatError("not_retryable", "Only a failed reply can be retried.")
        get_redis().delete(_stop_key(kind, reply.pk))  # a stop that came too late to act
        group = kind.group(reply)
        reply.refresh_from_db()
        payload = {"type": "retrying", "message": kind.serialize(reply)}
        transaction.on_commit(lambda: reply_publish(group, payload))
        transaction.on_commit(lambda: kind.enqueue(reply.pk))
    return reply


def reply_stop(kind: ReplyKind, *, reply: Any) -> None:
    """Stop a pending or streaming reply; every socket of its conversation gets `stopped`.

    A reply not started yet is stopped here. One being generated is stopped by its
    worker, wherever it runs: the request is published, and also kept for a worker that
    claims the reply before it subscribes to hear it. Raises ChatError(not_stoppable).
    """
    if reply.status not in UNSETTLED:
        raise ChatError("not_stoppable", "This reply has already ended.", field="message_id")
    redis = get_redis()
    redis.set(_stop_key(kind, reply.pk), 1, ex=STOP_REQUEST_TTL)
    redis.publish(STOP_CHANNEL, kind.key(reply.pk))
    with transaction.atomic():
        if kind.model.objects.filter(pk=reply.pk, status=PENDING).update(
            status=STOPPED, next_attempt_at=None, error=""
        ):
            _announce_settled(kind, reply=reply, frame_type="stopped")


def _announce_settled(kind: ReplyKind, *, reply: Any, frame_type: str, **stored: Any) -> None:
    """After commit, send a settled reply to its conversation: {"type", "message"}.

    `stored` names the fields just written; without them the row is read again.
    """
    group = kind.group(reply)
    if stored:
        for field, value in stored.items():
            setattr(reply, field, value)
    else:
        reply.refresh_from_db()
    payload = {"type": frame_type, "message": kind.serialize(reply)}
    transaction.on_commit(lambda: reply_publish(group, payload))


def reply_resume_deltas(
    kind: ReplyKind, *, messages: list[Any]
) -> list[tuple[dict[str, Any], tuple[int, int]]]:
    """For each streaming reply among `messages`: a delta at offset 0 with its text so far.

    Paired with (reply id, attempt), the stream it starts (JsonSocketConsumer's
    send_stream_start). Read after the socket joined its group, so later deltas arrive live.
    """
    streaming = [m for m in messages if m.status == STREAMING]
    if not streaming:
        return []
    keys = [_partial_key(kind, m.pk, m.attempt) for m in streaming]
    resumed = []
    for reply, value in zip(streaming, get_redis().mget(keys), strict=True):
        if value:
            delta = {
                "type": "delta",
                "message_id": reply.pk,
                "reply_to": reply.reply_to_id,
                "offset": 0,
                "text": value.decode(),
            }
            resumed.append((delta, (reply.pk, reply.attempt)))
    return resumed


# --- generation (runs in the Celery worker) -------------------------------------------------


def reply_task_run(task: Task, kind: ReplyKind, *, reply_id: int) -> None:
    """The body of a reply's Celery task: generate, and retry the task while it must wait."""
    try:
        wait = reply_generate(kind, reply_id=reply_id)
    except Exception as exc:
        # A reply's own failures are settled inside the pipeline; what reaches here is the
        # infrastructure (database, Redis) failing: try again once it may be back.
        raise task.retry(countdown=UNEXPECTED_ERROR_RETRY_SECONDS, exc=exc) from exc
    finally:
        db_release()
    if wait is not None:
        raise task.retry(countdown=max(0.05, wait))


def reply_generate(kind: ReplyKind, *, reply_id: int) -> float | None:
    """Generate the conversation's pending replies in order, this one among them.

    Returns None when there is nothing more for this task to do (the reply is settled,
    or the lock's holder will answer it), or the seconds after which to call again (the
    next reply waits out a backoff).
    """
    reply = kind.replies().filter(pk=reply_id).first()
    if reply is None or reply.status not in UNSETTLED:
        return None
    conversation_id = kind.conversation_id(reply)
    while True:
        lock = get_redis().lock(
            kind.lock_key(conversation_id),
            timeout=settings.CHAT_REPLY_LOCK_TTL,
            thread_local=False,
        )
        if not lock.acquire(blocking=False):
            return None  # the holder looks for pending replies again after letting go
        IN_FLIGHT.hold(lock)
        try:
            pending = _next_pending(kind, conversation_id=conversation_id)
            if pending is not None:
                if pending.next_attempt_at and pending.next_attempt_at > timezone.now():
                    return (pending.next_attempt_at - timezone.now()).total_seconds()
                _attempt_or_abandon(kind, reply=pending)
        finally:
            IN_FLIGHT.let_go(lock)
            with contextlib.suppress(LockError):
                lock.release()
        # Look after letting go: a reply queued while the lock was held was left to us.
        if _next_pending(kind, conversation_id=conversation_id) is None:
            return None


def _attempt_or_abandon(kind: ReplyKind, *, reply: Any) -> None:
    """One attempt (the lock is held); an unexpected crash fails the reply, not the task."""
    try:
        _attempt(kind, reply=reply)
    except Exception:
        logger.exception("generating reply %s crashed", reply.pk)
        reply_abandon(kind, reply_id=reply.pk, reason="The assistant hit an internal error.")


def _next_pending(kind: ReplyKind, *, conversation_id: int) -> Any:
    """The conversation's oldest reply still to be generated (replies go out in order)."""
    return kind.in_conversation(conversation_id).filter(status__in=UNSETTLED).order_by("id").first()


def _attempt(kind: ReplyKind, *, reply: Any) -> None:
    """One inference attempt for one reply: stream deltas, then store the result."""
    key = kind.key(reply.pk)
    cancel = IN_FLIGHT.begin(key)  # before the claim: a stop published from now on is heard
    attempt = reply.attempt + 1
    try:
        claimed = kind.model.objects.filter(
            pk=reply.pk, status__in=UNSETTLED, attempt=reply.attempt
        ).update(status=STREAMING, attempt=attempt, next_attempt_at=None)
        if not claimed:
            return
        if get_redis().exists(_stop_key(kind, reply.pk)):
            cancel.set()  # stopped between the web's check and our claim
        prompt = kind.prompt(reply)
        db_release()
        streamer = _DeltaStreamer(kind, reply=reply, attempt=attempt)
        try:
            _stream(prompt, streamer=streamer, cancel=cancel)
        except ProviderError as exc:
            if not cancel.is_set():
                _attempt_failed(kind, reply=reply, attempt=attempt, exc=exc)
                return
        status = STOPPED if cancel.is_set() else DONE
        _settle(kind, reply=reply, attempt=attempt, status=status, text=streamer.text)
    finally:
        IN_FLIGHT.end(key)
        get_redis().delete(_partial_key(kind, reply.pk, attempt), _stop_key(kind, reply.pk))


def _stream(prompt: list[PromptMessage], *, streamer: "_DeltaStreamer", cancel: Cancel) -> None:
    """Stream the model's answer into deltas until it ends, fails or is stopped."""
    deadline = time.monotonic() + settings.INFERENCE_MAX_SECONDS
    for chunk in get_provider().stream(prompt, cancel):
        if cancel.is_set():
            return
        streamer.add(chunk)
        if time.monotonic() > deadline:
            raise ProviderError("The reply took too long.", retryable=True)
    if cancel.is_set():
        return
    streamer.flush()
    if not streamer.text.strip():
        raise ProviderError("The model returned an empty reply.", retryable=False)


class _DeltaStreamer:
    """Coalesce chunks into deltas sent at most every CHAT_DELTA_INTERVAL seconds.

    Each delta is appended to the reply's partial text in Redis before it is sent, so a
    socket that reads the partial text and then gets live deltas misses nothing; the
    group event names the span it covers, so the socket drops what it already has.
    """

    def __init__(self, kind: ReplyKind, *, reply: Any, attempt: int) -> None:
        self.reply = reply
        self.attempt = attempt
        self.live_channel = live_channel(kind.group(reply))
        self.partial_key = _partial_key(kind, reply.pk, attempt)
        self.parts: list[str] = []
        self.pending: list[str] = []
        self.offset = 0
        self.last_flush = 0.0  # the first chunk goes out at once; later ones are coalesced

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def add(self, chunk: str) -> None:
        self.parts.append(chunk)
        self.pending.append(chunk)
        if time.monotonic() - self.last_flush >= settings.CHAT_DELTA_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        text = "".join(self.pending)
        end = self.offset + len(text)
        payload = {
            "type": "delta",
            "message_id": self.reply.pk,
            "reply_to": self.reply.reply_to_id,
            "offset": self.offset,
            "text": text,
        }
        span = f"{self.reply.pk}:{self.attempt}:{self.offset}:{end}"
        _DELTA_SCRIPT.run(
            keys=[self.partial_key, self.live_channel],
            args=[text, int(settings.INFERENCE_MAX_SECONDS) + 60,
                  live_payload([json.dumps(payload)], [span])],
        )  # fmt: skip
        self.offset = end
        self.pending.clear()
        self.last_flush = time.monotonic()


def _backoff_seconds(*, attempt: int, exc: ProviderError) -> float:
    if exc.retry_after is not None and math.isfinite(exc.retry_after):
        return min(max(0.0, exc.retry_after), settings.INFERENCE_BACKOFF_MAX)
    base = settings.INFERENCE_BACKOFF_BASE * 2 ** (attempt - 1)
    return min(base * random.uniform(0.8, 1.2), settings.INFERENCE_BACKOFF_MAX)


def _attempt_failed(kind: ReplyKind, *, reply: Any, attempt: int, exc: ProviderError) -> None:
    """Schedule another attempt, or after the last one mark the reply failed and say so."""
    owned = kind.model.objects.filter(pk=reply.pk, status__in=UNSETTLED, attempt=attempt)
    used = attempt - reply.retry_base  # a manual retry restarts the budget
    if exc.retryable and used < settings.INFERENCE_MAX_ATTEMPTS:
        delay = _backoff_seconds(attempt=used, exc=exc)
        logger.info(
            "reply %s attempt %s failed (%s); retry in %.1fs", reply.pk, attempt, exc, delay
        )
        owned.update(
            status=PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            error=str(exc),
        )
        return
    logger.warning("reply %s failed after %s attempts: %s", reply.pk, used, exc)
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
        transaction.on_commit(lambda: reply_publish(group, payload))


def reply_abandon(kind: ReplyKind, *, reply_id: int, reason: str) -> None:
    """Mark an unfinished reply failed after an unexpected error, and tell the conversation."""
    reply = kind.replies().filter(pk=reply_id).first()
    if reply is None or reply.status not in UNSETTLED:
        return
    _attempt_failed(
        kind, reply=reply, attempt=reply.attempt, exc=ProviderError(reason, retryable=False)
    )


def _settle(kind: ReplyKind, *, reply: Any, attempt: int, status: str, text: str) -> None:
    """Store the finished (or stopped) reply if this attempt still owns the row, then send it.

    Sent as {"type": "reply"} when done, {"type": "stopped"} when stopped.
    """
    with transaction.atomic():
        fields = {"text": text, "status": status, "error": ""}
        stored = kind.model.objects.filter(pk=reply.pk, status=STREAMING, attempt=attempt).update(
            **fields
        )
        if stored:
            frame_type = "reply" if status == DONE else status
            _announce_settled(kind, reply=reply, frame_type=frame_type, attempt=attempt, **fields)


# --- recovery (the worker's supervisor calls this every few seconds) -----------------------


def replies_requeue_orphans(kind: ReplyKind) -> int:
    """Queue again the replies no worker is answering; returns how many.

    A conversation whose lock nobody holds but whose oldest due reply is `streaming` lost
    its worker (the lease ran out); a `pending` one older than CHAT_REPLY_ORPHAN_AFTER
    may have lost its task. A second task for a reply is harmless (the lock decides), and
    a marker keeps the workers' supervisors from queueing the same reply over and over.
    """
    now = timezone.now()
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    rows = (
        kind.replies()
        .filter(due, status__in=UNSETTLED)
        .order_by("id")
        .values_list("pk", kind.conversation_field, "status", "created_at")
    )
    redis = get_redis()
    orphan_after = timedelta(seconds=settings.CHAT_REPLY_ORPHAN_AFTER)
    seen: set[int] = set()
    queued = 0
    for reply_id, conversation_id, status, created_at in rows:
        if conversation_id in seen:
            continue
        seen.add(conversation_id)
        if status == PENDING and created_at > now - orphan_after:
            continue
        if redis.exists(kind.lock_key(conversation_id)):
            continue
        marker = f"chat:requeued:{kind.key(reply_id)}"
        if redis.set(marker, 1, nx=True, ex=settings.CHAT_REPLY_ORPHAN_AFTER):
            logger.warning("%s reply %s has no worker: queued again", kind.name, reply_id)
            kind.enqueue(reply_id)
            queued += 1
    return queued
