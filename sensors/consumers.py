"""Sensor sockets: devices publish; browsers watch one sensor or all of them."""

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from chatsite.errors import AppError
from chatsite.fanout import LiveEvent
from chatsite.sockets import CloseSocket, JsonSocketConsumer
from sensors.errors import SensorError
from sensors.models import (
    OVERVIEW_GROUP,
    Sensor,
    publisher_group_name,
    sensor_group_name,
    stream_id_tuple,
    stream_id_valid,
)
from sensors.selectors import (
    UNAUTHORIZED,
    readings_after_async,
    readings_latest_async,
    sensor_authenticate,
    sensor_get,
    sensors_list,
)
from sensors.services import readings_append_async
from sensors.validation import readings_validate

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
HISTORY_CHUNK = 1000


def bearer_key(scope: dict[str, Any], query_key: str | None) -> str | None:
    """The key from `Authorization: Bearer <key>`, else from ?key=."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
    return query_key


class PublishConsumer(JsonSocketConsumer):
    """/ws/sensors/<slug>/publish: a device sends readings, each frame acked with its ids."""

    max_frame_bytes = settings.SENSOR_MAX_FRAME_BYTES

    async def connect(self) -> None:
        """Accept, then authenticate by key; refusals close 4401 without saying why."""
        await self.accept()
        self.slug: str | None = None
        slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            await database_sync_to_async(sensor_authenticate)(
                slug=slug, key=bearer_key(self.scope, self.query_param("key"))
            )
        except SensorError:
            await self.close_with(CloseSocket(CLOSE_UNAUTHORIZED, "unauthorized", UNAUTHORIZED))
            return
        self.slug = slug
        await self.channel_layer.group_add(publisher_group_name(slug), self.channel_name)

    async def disconnect(self, code: int) -> None:
        """Leave the publishers' group."""
        if getattr(self, "slug", None):
            await self.channel_layer.group_discard(
                publisher_group_name(self.slug), self.channel_name
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Ignore frames from a socket that was refused at connect."""
        if getattr(self, "slug", None):
            await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def dispatch_frame(self, frame: Any) -> None:
        """A ping, or readings: validate all, append (within the rate limit), ack the ids."""
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await self.on_ping(frame)
            return
        readings = readings_validate(frame)
        ids = await readings_append_async(slug=self.slug, readings=readings)
        await self.send_json({"type": "ack", "ids": ids})

    async def publisher_revoke(self, event: dict[str, Any]) -> None:
        """The key was rotated or the sensor deactivated: this connection ends."""
        await self.close_with(CloseSocket(CLOSE_UNAUTHORIZED, "unauthorized", UNAUTHORIZED))


class WatchingConsumer(JsonSocketConsumer):
    """Shared by the watching sockets: the optional login requirement."""

    async def refuse_anonymous(self) -> bool:
        """Close with 4401 when watching needs a login and there is none."""
        if not settings.SENSOR_WATCH_REQUIRES_LOGIN:
            return False
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return False
        await self.close_with(
            CloseSocket(CLOSE_UNAUTHORIZED, "login_required", "Log in to watch sensors.")
        )
        return True

    async def dispatch_frame(self, frame: Any) -> None:
        """Watchers only ping."""
        if not (isinstance(frame, dict) and frame.get("type") == "ping"):
            raise AppError("unknown_type", "Watching sockets accept only ping.", field="type")
        await self.on_ping(frame)


class SensorWatchConsumer(WatchingConsumer):
    """/ws/sensors/<slug>[?after=<id>]: history (or the replay), then every new reading."""

    async def connect(self) -> None:
        """Join the live group first, then send history, so nothing falls between."""
        await self.accept()
        self.group: str | None = None
        if await self.refuse_anonymous():
            return
        after = self.query_param("after")
        if after is not None and not stream_id_valid(after):
            await self.close_with(
                CloseSocket(CLOSE_BAD_REQUEST, "invalid_after", "after must be a stream id")
            )
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            sensor: Sensor = await database_sync_to_async(sensor_get)(slug=slug)
        except SensorError:
            await self.close_with(CloseSocket(CLOSE_NOT_FOUND, "not_found", "No such sensor."))
            return
        self.group = sensor_group_name(slug)
        await self.live_join(self.group)
        if after is not None:
            readings = await readings_after_async(
                slug=slug, after=after, limit=settings.SENSOR_REPLAY_MAX
            )
        else:
            readings = await readings_latest_async(slug=slug, count=settings.SENSOR_HISTORY_COUNT)
        # Live readings up to here may also be in the history: skip them until one is newer.
        last = readings[-1]["id"] if readings else after
        self.seen_up_to = stream_id_tuple(last) if last else None
        for start in range(0, max(len(readings), 1), HISTORY_CHUNK):
            chunk = readings[start : start + HISTORY_CHUNK]
            await self.send_json(
                {"type": "history", "sensor": slug, "units": sensor.units, "readings": chunk}
            )
        self.live_start()

    async def disconnect(self, code: int) -> None:
        """Leave the sensor's group."""
        await self.live_leave_all()

    def live_messages(self, event: LiveEvent) -> list[dict[str, Any]]:
        """Live readings, less those the history already held.

        Ids grow in append order, and each reading is published in the script that
        appended it, so events come in id order: anything at or below the history's last
        id was sent already, and once an event starts past it, every later one does too.
        """
        if event.ids is None or self.seen_up_to is None:
            return super().live_messages(event)
        keys = event.memo.get("keys")
        if keys is None:
            keys = event.memo["keys"] = [stream_id_tuple(entry_id) for entry_id in event.ids]
        seen = self.seen_up_to
        if keys[0] > seen:
            self.seen_up_to = None  # past the history: no more checks for this socket
            return event.messages
        return [message for key, message in zip(keys, event.messages, strict=True) if key > seen]


class SensorsOverviewConsumer(WatchingConsumer):
    """/ws/sensors: every sensor's latest reading and state, then all readings and changes."""

    async def connect(self) -> None:
        """Join the overview group, then send the snapshot."""
        await self.accept()
        if await self.refuse_anonymous():
            return
        await self.live_join(OVERVIEW_GROUP)
        sensors = await database_sync_to_async(sensors_list)()
        await self.send_json({"type": "snapshot", "sensors": sensors})
        self.live_start()

    async def disconnect(self, code: int) -> None:
        """Leave the overview group."""
        await self.live_leave_all()
