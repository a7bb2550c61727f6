"""Wire shapes of room objects."""

from typing import Any

from chat.rooms.models import Room, RoomMessage


def room_message_data(message: RoomMessage) -> dict[str, Any]:
    """The room message object, the same everywhere it appears (see docs/protocol.md)."""
    return {
        "id": message.pk,
        "author": message.author,
        "text": message.text,
        "status": message.status,
        "created_at": message.created_at.isoformat(),
        "reply_to": message.reply_to_id,
        "client_id": message.client_id,
    }


def room_data(room: Room, *, online: int) -> dict[str, Any]:
    """A room in lists: slug, title, capacity, private, online member count."""
    return {
        "slug": room.slug,
        "title": room.title,
        "capacity": room.capacity,
        "private": room.is_private,
        "online": online,
    }
