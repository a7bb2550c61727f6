"""Reads of rooms, their messages and API tokens."""

from typing import Any

from django.conf import settings
from django.utils import timezone

from chat.errors import ChatError
from chat.rooms.models import ApiToken, Room, RoomMessage
from chat.rooms.presence import presence_counts
from chat.rooms.serializers import room_data
from chatsite.credentials import credential_hash


def room_get(*, slug: str) -> Room:
    """A room by slug, or ChatError(not_found)."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        raise ChatError("not_found", "No such room.", status=404)
    return room


def rooms_list() -> list[dict[str, Any]]:
    """Every room with how many members are online in it."""
    rooms = list(Room.objects.all())
    counts = presence_counts(slugs=[r.slug for r in rooms])
    return [room_data(r, online=counts[r.slug]) for r in rooms]


def room_messages_list(*, room_id: int, after_id: int | None = None) -> list[RoomMessage]:
    """The last ROOM_HISTORY_COUNT messages, or every message after after_id; oldest first."""
    messages = RoomMessage.objects.filter(room_id=room_id)
    if after_id is not None:
        return list(messages.filter(id__gt=after_id).order_by("id"))
    latest = list(messages.order_by("-id")[: settings.ROOM_HISTORY_COUNT])
    latest.reverse()
    return latest


def api_token_authenticate(*, token: str) -> ApiToken:
    """The active API token with this value, or ChatError(unauthorized)."""
    api_token = ApiToken.objects.filter(token_hash=credential_hash(token), active=True).first()
    if api_token is None:
        raise ChatError("unauthorized", "Unknown or inactive API token.", status=401)
    ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=timezone.now())
    return api_token
