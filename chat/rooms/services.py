"""Writes of chat rooms: rooms, messages (from members and from outside), tokens."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from chat.errors import ChatError
from chat.rooms.models import ASSISTANT_NAME, ApiToken, Room, RoomMessage, room_group_name
from chat.rooms.serializers import room_message_data
from chat.validation import validate_client_id, validate_name, validate_text
from chatsite.broadcast import broadcast_sync
from chatsite.credentials import credential_hash, credential_new, credential_prefix

ASSISTANT_MENTION = "@assistant"


def room_author_validate(name: Any, *, field: str = "name") -> str:
    """A member's or poster's display name; "assistant" is the assistant's alone."""
    name = validate_name(name, field=field)
    if name.lower() == ASSISTANT_NAME:
        raise ChatError("invalid_name", "That name belongs to the assistant.", field=field)
    return name


def room_create(*, slug: Any, title: Any, capacity: Any = 50) -> Room:
    """Create a room (capacity 2 makes it a private conversation)."""
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise ChatError("invalid_capacity", "capacity must be a number.", field="capacity")
    room = Room(slug=slug if isinstance(slug, str) else "", title=title, capacity=capacity)
    try:
        room.full_clean()
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise ChatError(f"invalid_{field}", messages[0], field=field) from exc
    room.save()
    return room


def room_message_create(
    *, room: Room, author: str, text: Any, client_id: Any = None, origin_channel: str | None = None
) -> tuple[RoomMessage, bool]:
    """Store a member's message and broadcast it after commit; (message, created).

    A client_id this author used before returns the original message. A message that
    starts with @assistant also asks the assistant, whose reply streams into the room.
    """
    text = validate_text(text)
    client_id = validate_client_id(client_id)
    with transaction.atomic():
        if client_id is not None:
            existing = _by_client_id(room=room, author=author, client_id=client_id)
            if existing is not None:
                _reply_requeue_if_pending(message=existing)
                return existing, False
        try:
            with transaction.atomic():
                message = RoomMessage.objects.create(
                    room=room, author=author, text=text, client_id=client_id
                )
        except IntegrityError:
            existing = _by_client_id(room=room, author=author, client_id=client_id)
            if existing is None:
                raise
            _reply_requeue_if_pending(message=existing)
            return existing, False
        payload = {"type": "message", "message": room_message_data(message)}
        transaction.on_commit(
            lambda: broadcast_sync(room_group_name(room.slug), payload, skip_channel=origin_channel)
        )
        if text.lstrip().lower().startswith(ASSISTANT_MENTION):
            _assistant_request(room=room, question=message)
    return message, True


def _reply_requeue_if_pending(*, message: RoomMessage) -> None:
    """A resent message whose assistant reply never started may have lost its task."""
    from chat.rooms.tasks import generate_room_reply

    pending = message.replies.filter(status=RoomMessage.Status.PENDING).values_list("pk", flat=True)
    for reply_id in pending:
        transaction.on_commit(lambda reply_id=reply_id: generate_room_reply.delay(reply_id))


def _by_client_id(*, room: Room, author: str, client_id: str | None) -> RoomMessage | None:
    return RoomMessage.objects.filter(room=room, author=author, client_id=client_id).first()


def _assistant_request(*, room: Room, question: RoomMessage) -> None:
    """Hook for the assistant: replaced by the room reply pipeline (chat/rooms/assistant.py)."""
    from chat.rooms.assistant import room_assistant_request

    room_assistant_request(room=room, question=question)


def room_message_post(*, room: Room, author: Any, text: Any) -> RoomMessage:
    """Post into a room from outside (integrations, announcements) and broadcast it."""
    message, _ = room_message_create(
        room=room, author=room_author_validate(author, field="author"), text=text
    )
    return message


def room_messages_delete(*, message_ids: list[int]) -> int:
    """Delete messages and remove them live from every member's view."""
    with transaction.atomic():
        doomed = list(
            RoomMessage.objects.filter(pk__in=message_ids).values_list("pk", "room__slug")
        )
        RoomMessage.objects.filter(pk__in=[pk for pk, _ in doomed]).delete()
        for pk, slug in doomed:
            payload = {"type": "deleted", "message_id": pk}
            transaction.on_commit(
                lambda slug=slug, payload=payload: broadcast_sync(room_group_name(slug), payload),
                robust=True,
            )
    return len(doomed)


def api_token_create(*, name: str) -> tuple[ApiToken, str]:
    """Create an API token for posting into rooms; the raw token is returned once."""
    raw = credential_new()
    token = ApiToken.objects.create(
        name=name, token_hash=credential_hash(raw), token_prefix=credential_prefix(raw)
    )
    return token, raw
