"""The assistant chat socket."""

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings

from chat.errors import ChatError
from chat.replies import reply_resume_deltas
from chat.selectors import chat_messages_list, chat_session_get_active
from chat.serializers import message_data
from chat.services import CHAT_REPLIES, chat_message_create, chat_reply_retry, chat_reply_stop
from chatsite.errors import AppError
from chatsite.ratelimit import rate_limit_check_async
from chatsite.sockets import CloseSocket, Handler, JsonSocketConsumer

CLOSE_BAD_REQUEST = 4400
CLOSE_SESSION_GONE = 4401


class ChatConsumer(JsonSocketConsumer):
    """/ws/chat/<token>: history on connect, user messages in, streamed replies out."""

    max_frame_bytes = settings.CHAT_MAX_FRAME_BYTES

    def handlers(self) -> dict[str, Handler]:
        return {
            "ping": self.on_ping,
            "message": self.on_message,
            "retry": self.on_retry,
            "stop": self.on_stop,
        }

    async def connect(self) -> None:
        """Accept, authenticate by token, join the session's group, send the history."""
        await self.accept()
        self.session_id: int | None = None
        after = self.query_param("after")
        if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
            await self.close_with(
                CloseSocket(CLOSE_BAD_REQUEST, "invalid_after", "after must be a message id")
            )
            return
        try:
            session = await database_sync_to_async(chat_session_get_active)(
                token=self.scope["url_route"]["kwargs"]["token"]
            )
        except ChatError:
            await self.close_with(
                CloseSocket(CLOSE_SESSION_GONE, "session_not_found", "Session unknown or expired.")
            )
            return
        self.session_id = session.pk
        self.group = session.group_name
        # Join before reading history: anything later arrives live, nothing falls between.
        # The reply pipeline's frames come through the live group, the rest through the
        # channel layer's; both hold what comes until connect() is done.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.live_join(self.group)
        messages = await database_sync_to_async(chat_messages_list)(
            session_id=session.pk, after_id=int(after) if after else None
        )
        await self.send_json({"type": "history", "messages": [message_data(m) for m in messages]})
        # A reply streaming right now: its text so far, then its live deltas from there.
        for delta, stream in await sync_to_async(reply_resume_deltas)(
            CHAT_REPLIES, messages=messages
        ):
            await self.send_stream_start(delta, stream=stream)
        self.live_start()

    async def disconnect(self, code: int) -> None:
        """Leave the session's groups."""
        if getattr(self, "session_id", None) is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.live_leave_all()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Ignore frames from a socket that was refused at connect."""
        if getattr(self, "session_id", None) is not None:
            await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def _limit(self) -> None:
        await rate_limit_check_async(
            scope="chat", subject=str(self.session_id),
            limit=settings.CHAT_RATE_LIMIT, window=settings.CHAT_RATE_WINDOW,
        )  # fmt: skip

    async def on_message(self, frame: dict[str, Any]) -> None:
        """Store a user message and ack it (the original one for a repeated client_id)."""
        client_id = frame.get("client_id")
        try:
            await self._limit()
            message, _created = await database_sync_to_async(chat_message_create)(
                session_id=self.session_id, text=frame.get("text"), client_id=client_id,
                origin_channel=self.channel_name,
            )  # fmt: skip
        except AppError as err:
            if isinstance(client_id, str):
                err.extra.setdefault("client_id", client_id)
            raise _close_if_gone(err) from None
        await self.send_json(
            {"type": "ack", "client_id": message.client_id, "message": message_data(message)}
        )

    async def on_retry(self, frame: dict[str, Any]) -> None:
        """Queue a failed reply again."""
        await self._on_reply(chat_reply_retry, frame)

    async def on_stop(self, frame: dict[str, Any]) -> None:
        """Stop a pending or streaming reply; every socket of the session gets `stopped`."""
        await self._on_reply(chat_reply_stop, frame)

    async def _on_reply(self, service: Callable[..., Any], frame: dict[str, Any]) -> None:
        """Rate-limit, then apply a service to the reply the frame's message_id names."""
        try:
            await self._limit()
            await database_sync_to_async(service)(
                session_id=self.session_id, message_id=frame.get("message_id")
            )
        except AppError as err:
            raise _close_if_gone(err) from None


def _close_if_gone(err: AppError) -> Exception:
    """An expired session closes the socket; any other error is answered on it."""
    if err.code == "session_expired":
        return CloseSocket(CLOSE_SESSION_GONE, "session_expired", "This session has expired.")
    return err
