"""Wire shapes of chat objects (one place, used by HTTP and WebSocket alike)."""

from collections.abc import Iterable
from typing import Any

from chat.models import ChatMessage, ChatSession


def message_data(message: ChatMessage) -> dict[str, Any]:
    """The message object, the same everywhere it appears (see docs/protocol.md)."""
    return {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "status": message.status,
        "created_at": message.created_at.isoformat(),
        "reply_to": message.reply_to_id,
        "client_id": message.client_id,
    }


def session_data(
    session: ChatSession, messages: Iterable[ChatMessage], *, token: str | None = None
) -> dict[str, Any]:
    """The session object; the token only where the caller already holds or just got it."""
    data: dict[str, Any] = {
        "name": session.name,
        "created_at": session.created_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
        "messages": [message_data(m) for m in messages],
    }
    if token is not None:
        data = {"token": token, **data}
    return data
