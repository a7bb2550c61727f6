"""The assistant as a room member: @assistant questions, answered by the shared pipeline.

A question gets a pending RoomMessage by "assistant" at once (everyone sees it typing);
the Celery worker streams the answer into the room through chat/replies.py, with the
room's recent messages as context, under the same frames as the assistant chat.
"""

from typing import Any

from django.conf import settings
from django.db import transaction

from chat.errors import ChatError
from chat.providers import PromptMessage
from chat.replies import (
    FAILED,
    STOPPED,
    UNSETTLED,
    ReplyKind,
    reply_named,
    reply_retry,
    reply_stop,
    validate_message_id,
)
from chat.rooms.models import ASSISTANT_NAME, Room, RoomMessage, room_group_name
from chat.rooms.serializers import room_message_data
from chat.selectors import context_within_budget
from chatsite.broadcast import broadcast_sync
from chatsite.errors import AppError, error_event
from chatsite.ratelimit import rate_limit_check

RATE_LIMIT_SCOPE = "room-assistant"


def room_assistant_request(*, room: Room, question: RoomMessage) -> RoomMessage | None:
    """Ask the assistant to answer a room message (call inside the message's transaction).

    Returns the pending reply, queued after commit; or None when the room has used up its
    assistant rate limit, which the room is told with an error naming the question.
    """
    group = room_group_name(room.slug)
    try:
        _rate_limit(room=room)
    except AppError as err:
        payload = {**error_event(err), "reply_to": question.pk}
        transaction.on_commit(lambda: broadcast_sync(group, payload))
        return None
    reply = RoomMessage.objects.create(
        room=room, author=ASSISTANT_NAME, status=RoomMessage.Status.PENDING, reply_to=question
    )
    payload = {"type": "message", "message": room_message_data(reply)}
    transaction.on_commit(lambda: broadcast_sync(group, payload))
    transaction.on_commit(lambda: _room_reply_enqueue(reply.pk))
    return reply


def room_reply_retry(*, room: Room, message_id: Any) -> RoomMessage:
    """Put a failed assistant reply (named by its id or its question's id) back in the queue.

    Raises ChatError invalid_message_id, not_found or not_retryable; a retry counts
    against the room's assistant rate limit (AppError rate_limited, nothing requeued).
    """
    message_id = validate_message_id(message_id)
    with transaction.atomic():
        reply = reply_retry(ROOM_REPLIES, conversation_id=room.pk, message_id=message_id)
        # Counted only for a real requeue; refusing rolls it back with its broadcasts.
        _rate_limit(room=room)
    return reply


def room_reply_stop(*, room: Room, message_id: Any, member: str, staff: bool) -> RoomMessage:
    """Stop an @assistant reply (named by its id or its question's id); the room is told.

    Only the member who asked, or staff, may stop it: ChatError(forbidden) otherwise.
    """
    message_id = validate_message_id(message_id)
    reply = reply_named(ROOM_REPLIES, conversation_id=room.pk, message_id=message_id)
    asker = RoomMessage.objects.filter(pk=reply.reply_to_id).values_list("author", flat=True)
    if not staff and asker.first() != member:
        raise ChatError(
            "forbidden", "Only the member who asked, or staff, can stop this reply.",
            field="message_id", status=403,
        )  # fmt: skip
    reply_stop(ROOM_REPLIES, reply=reply)
    return reply


def _rate_limit(*, room: Room) -> None:
    rate_limit_check(
        scope=RATE_LIMIT_SCOPE, subject=room.slug,
        limit=settings.ROOM_ASSISTANT_RATE_LIMIT, window=settings.CHAT_RATE_WINDOW,
    )  # fmt: skip


def _room_reply_enqueue(reply_id: int) -> None:
    from chat.rooms.tasks import generate_room_reply

    generate_room_reply.delay(reply_id)


def _room_context_messages(*, reply: RoomMessage) -> list[RoomMessage]:
    """The room's latest messages before the reply, leaving out unsettled or failed answers."""
    candidates = (
        RoomMessage.objects.filter(room_id=reply.room_id, id__lt=reply.id)
        .exclude(author=ASSISTANT_NAME, status__in=[*UNSETTLED, FAILED])
        .exclude(author=ASSISTANT_NAME, status=STOPPED, text="")
        .order_by("-id")[: settings.ROOM_ASSISTANT_CONTEXT_MESSAGES]
    )
    return context_within_budget(candidates)


def _room_prompt(reply: RoomMessage) -> list[PromptMessage]:
    """System prompt (naming the room), then members' turns as "<author>: <text>"."""
    system = (
        f"{settings.INFERENCE_SYSTEM_PROMPT}\n"
        f"You are in a group chat room named {reply.room}, where members address you as "
        f"@assistant. Each member's message comes as <name>: <text>; answer the latest one."
    )
    return [PromptMessage("system", system)] + [
        PromptMessage("assistant", m.text)
        if m.author == ASSISTANT_NAME
        else PromptMessage("user", f"{m.author}: {m.text}")
        for m in _room_context_messages(reply=reply)
    ]


ROOM_REPLIES = ReplyKind(
    name="room",
    model=RoomMessage,
    conversation_field="room_id",
    reply_filter={"author": ASSISTANT_NAME},
    lock_key=lambda room_id: f"chat:room:{room_id}:replying",
    group=lambda reply: room_group_name(reply.room.slug),
    prompt=_room_prompt,
    serialize=room_message_data,
    enqueue=_room_reply_enqueue,
)
