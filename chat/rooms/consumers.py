"""The room socket: presence, history and resume, messages, typing, the assistant."""

import hashlib
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from chat.errors import ChatError
from chat.replies import reply_resume_deltas
from chat.rooms.assistant import ROOM_REPLIES, room_reply_retry, room_reply_stop
from chat.rooms.models import Room, room_group_name
from chat.rooms.presence import (
    presence_join,
    presence_leave,
    presence_members,
    presence_sweeper_ensure,
    presence_touch,
)
from chat.rooms.selectors import room_get, room_messages_list
from chat.rooms.serializers import room_message_data
from chat.rooms.services import room_author_validate, room_message_create
from chatsite.broadcast import frame_event
from chatsite.errors import AppError
from chatsite.ratelimit import rate_limit_check_async
from chatsite.sockets import CloseSocket, Handler, JsonSocketConsumer

CLOSE_BAD_REQUEST = 4400
CLOSE_NAME_TAKEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_FULL = 4409
TOUCH_EVERY = 1.0  # seconds: refresh presence at most this often per socket (or timeout/4)
TYPING_EVERY = 1.0  # seconds: relay a socket's typing at most this often


async def announce_leave(slug: str, name: str) -> None:
    """Tell a room that a member left (used on disconnect and by the timeout sweep)."""
    await get_channel_layer().group_send(
        room_group_name(slug),
        frame_event({"type": "presence", "event": "leave", "member": {"name": name}}),
    )


class RoomConsumer(JsonSocketConsumer):
    """/ws/rooms/<slug>?name=&client=&after=: a member of one room."""

    max_frame_bytes = settings.CHAT_MAX_FRAME_BYTES

    def handlers(self) -> dict[str, Handler]:
        return {
            "ping": self.on_ping,
            "message": self.on_message,
            "typing": self.on_typing,
            "retry": self.on_retry,
            "stop": self.on_stop,
        }

    async def connect(self) -> None:
        """Accept, check room, name and capacity, join presence, send members and history."""
        await self.accept()
        self.room: Room | None = None
        try:
            await self._join()
        except CloseSocket as close:
            await self.close_with(close)

    async def _join(self) -> None:
        after = self.query_param("after")
        if after is not None and not (after.isascii() and after.isdigit() and len(after) <= 18):
            raise CloseSocket(CLOSE_BAD_REQUEST, "invalid_after", "after must be a message id")
        try:
            room = await database_sync_to_async(room_get)(
                slug=self.scope["url_route"]["kwargs"]["slug"]
            )
        except ChatError:
            raise CloseSocket(CLOSE_NOT_FOUND, "not_found", "No such room.") from None
        self.name = self._member_name()
        outcome = await presence_join(
            slug=room.slug, name=self.name, channel=self.channel_name,
            owner=self._owner(), capacity=room.capacity,
        )  # fmt: skip
        if outcome == "full":
            raise CloseSocket(CLOSE_FULL, "room_full", "This room is full.")
        if outcome == "taken":
            raise CloseSocket(CLOSE_NAME_TAKEN, "name_taken", "Someone in this room has that name.")
        self.room = room
        self.group = room.group_name
        self.last_touch = time.monotonic()
        self.last_typing = 0.0
        # Join the group before reading history: anything later arrives live.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.live_join(self.group)  # the assistant's reply frames
        if outcome == "joined":
            await self._announce_join()
        presence_sweeper_ensure(announce_leave)
        members = await presence_members(slug=room.slug)
        messages = await database_sync_to_async(room_messages_list)(
            room_id=room.pk, after_id=int(after) if after else None
        )
        await self.send_json(
            {
                "type": "joined",
                "room": {"slug": room.slug, "title": room.title, "capacity": room.capacity},
                "me": self.name,
                "members": [{"name": name} for name in members],
                "messages": [room_message_data(m) for m in messages],
            }
        )
        # An @assistant reply streaming right now: its text so far, then live deltas.
        for delta, stream in await sync_to_async(reply_resume_deltas)(
            ROOM_REPLIES, messages=messages
        ):
            await self.send_stream_start(delta, stream=stream)
        self.live_start()

    async def _announce_join(self) -> None:
        await self.channel_layer.group_send(
            self.group,
            frame_event(
                {"type": "presence", "event": "join", "member": {"name": self.name}},
                skip_channel=self.channel_name,
            ),
        )

    def _member_name(self) -> str:
        user = self.scope.get("user")
        raw = user.get_username() if user is not None and user.is_authenticated else None
        try:
            return room_author_validate(raw if raw is not None else self.query_param("name"))
        except ChatError as err:
            raise CloseSocket(CLOSE_BAD_REQUEST, "invalid_name", err.message) from None

    def _owner(self) -> str:
        """Who holds the name: the user, else the browser's client id, else this socket."""
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        client = self.query_param("client")
        if client and len(client) <= 128:
            return "client:" + hashlib.sha256(client.encode()).hexdigest()
        return f"socket:{self.channel_name}"

    async def disconnect(self, code: int) -> None:
        """Leave the group and presence; the last tab of a member announces the leave."""
        await self.live_leave_all()
        if getattr(self, "room", None) is None:
            return
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if await presence_leave(slug=self.room.slug, name=self.name, channel=self.channel_name):
            await announce_leave(self.room.slug, self.name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Every frame counts as presence; frames from refused sockets are ignored."""
        if getattr(self, "room", None) is None:
            return
        now = time.monotonic()
        if now - self.last_touch >= min(TOUCH_EVERY, settings.ROOM_PRESENCE_TIMEOUT / 4):
            self.last_touch = now
            if not await presence_touch(
                slug=self.room.slug, name=self.name, channel=self.channel_name
            ):
                await self._rejoin()
        await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def _rejoin(self) -> None:
        """This socket had timed out (and its leave was announced): come back if there is room."""
        outcome = await presence_join(
            slug=self.room.slug, name=self.name, channel=self.channel_name,
            owner=self._owner(), capacity=self.room.capacity,
        )  # fmt: skip
        if outcome in ("full", "taken"):
            room, self.room = self.room, None
            await self.channel_layer.group_discard(room.group_name, self.channel_name)
            code, error = (
                (CLOSE_FULL, "room_full") if outcome == "full" else (CLOSE_NAME_TAKEN, "name_taken")
            )
            await self.close_with(
                CloseSocket(code, error, "You timed out and your place was taken.")
            )
            return
        if outcome == "joined":
            await self._announce_join()

    async def on_message(self, frame: dict[str, Any]) -> None:
        """Store and broadcast a message; the sender gets an ack (the original on a repeat)."""
        client_id = frame.get("client_id")
        try:
            await self._limit()
            message, _ = await database_sync_to_async(room_message_create)(
                room=self.room, author=self.name, text=frame.get("text"), client_id=client_id,
                origin_channel=self.channel_name,
            )  # fmt: skip
        except AppError as err:
            if isinstance(client_id, str):
                err.extra.setdefault("client_id", client_id)
            raise
        await self.send_json(
            {"type": "ack", "client_id": message.client_id, "message": room_message_data(message)}
        )

    async def on_typing(self, frame: dict[str, Any]) -> None:
        """Relay "typing" to the others, at most once a second per socket."""
        now = time.monotonic()
        if now - self.last_typing < TYPING_EVERY:
            return
        self.last_typing = now
        await self.channel_layer.group_send(
            self.group,
            frame_event(
                {"type": "typing", "member": {"name": self.name}}, skip_channel=self.channel_name
            ),
        )

    async def _limit(self) -> None:
        await rate_limit_check_async(
            scope=f"room:{self.room.slug}", subject=self.name,
            limit=settings.CHAT_RATE_LIMIT, window=settings.CHAT_RATE_WINDOW,
        )  # fmt: skip

    async def on_retry(self, frame: dict[str, Any]) -> None:
        """Ask the assistant again for a reply that failed."""
        await self._limit()
        await database_sync_to_async(room_reply_retry)(
            room=self.room, message_id=frame.get("message_id")
        )

    async def on_stop(self, frame: dict[str, Any]) -> None:
        """Stop an @assistant reply: the member who asked, or staff; the room gets `stopped`."""
        await self._limit()
        user = self.scope.get("user")
        await database_sync_to_async(room_reply_stop)(
            room=self.room, message_id=frame.get("message_id"), member=self.name,
            staff=bool(user is not None and user.is_authenticated and user.is_staff),
        )  # fmt: skip
