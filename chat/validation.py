"""Validation of client input shared by every chat edge (HTTP, sockets; sessions, rooms)."""

import unicodedata
from typing import Any

from django.conf import settings

from chat.errors import ChatError

MAX_CLIENT_ID_CHARS = 64


def bounded_text(
    value: Any, *, field: str, limit: int, blank_code: str, blank_message: str, long_code: str
) -> str:
    """A non-blank string of at most `limit` characters, or ChatError naming `field`."""
    if not isinstance(value, str) or not value.strip():
        raise ChatError(blank_code, blank_message, field=field)
    if len(value) > limit:
        raise ChatError(long_code, f"{field} is limited to {limit} characters.", field=field)
    return value


def validate_name(name: Any, *, field: str = "name") -> str:
    """A display name, trimmed, with no control characters (line breaks, tabs, NUL…)."""
    name = bounded_text(
        name.strip() if isinstance(name, str) else name, field=field,
        limit=settings.CHAT_NAME_MAX_CHARS, blank_code="invalid_name",
        blank_message="Give a name.", long_code="invalid_name",
    )  # fmt: skip
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise ChatError("invalid_name", "Names cannot contain control characters.", field=field)
    return name


def validate_text(text: Any) -> str:
    """Message text, kept exactly as sent."""
    return bounded_text(
        text, field="text", limit=settings.CHAT_MAX_MESSAGE_CHARS, blank_code="invalid_text",
        blank_message="The message is empty.", long_code="text_too_long",
    )  # fmt: skip


def validate_client_id(client_id: Any) -> str | None:
    """The client's own id for a message: optional, else a short non-blank string."""
    if client_id is None:
        return None
    return bounded_text(
        client_id, field="client_id", limit=MAX_CLIENT_ID_CHARS,
        blank_code="invalid_client_id", blank_message="client_id must be a non-empty string.",
        long_code="invalid_client_id",
    )  # fmt: skip
