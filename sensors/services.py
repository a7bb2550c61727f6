"""Writes of the sensors app: sensors and keys, appending readings, online status."""

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from chatsite.broadcast import broadcast_sync, frame_event, group_send_sync
from chatsite.credentials import credential_hash, credential_new, credential_prefix
from chatsite.redis_clients import get_async_redis, get_redis
from sensors.models import (
    OVERVIEW_GROUP,
    Sensor,
    publisher_group_name,
    sensor_group_name,
    stream_key,
)
from sensors.validation import ValidReading

LAST_SEEN_KEY = "sensors:last_seen"  # hash: slug -> Unix ms of the last reading received
ONLINE_KEY = "sensors:online"  # set of slugs currently online


# --- sensors and keys --------------------------------------------------------------------


def sensor_create(
    *, slug: str, name: str = "", description: str = "", units: dict[str, str] | None = None
) -> tuple[Sensor, str]:
    """Create a sensor; returns it with its key, which is never stored or shown again."""
    key = credential_new()
    sensor = Sensor(
        slug=slug, name=name or slug, description=description, units=units or {},
        key_hash=credential_hash(key), key_prefix=credential_prefix(key),
    )  # fmt: skip
    sensor.full_clean()
    sensor.save()
    return sensor, key


def sensor_key_rotate(*, sensor: Sensor) -> str:
    """Give the sensor a new key (returned once); connected publishers are closed."""
    key = credential_new()
    sensor.key_hash = credential_hash(key)
    sensor.key_prefix = credential_prefix(key)
    sensor.save(update_fields=["key_hash", "key_prefix"])
    # robust: Redis being away must not cost the operator the one sight of the new key.
    transaction.on_commit(lambda: _publishers_close(sensor.slug), robust=True)
    return key


def sensor_deactivate(*, sensor: Sensor) -> None:
    """Stop accepting the sensor's readings; connected publishers are closed."""
    sensor.active = False
    sensor.save(update_fields=["active"])
    transaction.on_commit(lambda: _publishers_close(sensor.slug), robust=True)


def _publishers_close(slug: str) -> None:
    group_send_sync(publisher_group_name(slug), {"type": "publisher.revoke"})


# --- appending readings ------------------------------------------------------------------


def _queue_append(pipe: Any, slug: str, readings: list[ValidReading], now_ms: int) -> None:
    key = stream_key(slug)
    for reading in readings:
        fields = {"ts": reading.ts_ms, "v": json.dumps(reading.values, separators=(",", ":"))}
        pipe.xadd(key, fields, maxlen=settings.SENSOR_STREAM_MAXLEN, approximate=True)
    pipe.hset(LAST_SEEN_KEY, slug, now_ms)
    pipe.sadd(ONLINE_KEY, slug)


def reading_frame(slug: str, entry_id: str, reading: ValidReading) -> str:
    """The wire frame of one reading, serialised once for every watcher."""
    payload = {
        "type": "reading", "sensor": slug, "id": entry_id, "ts": reading.ts_ms,
        "values": reading.values,
    }  # fmt: skip
    return json.dumps(payload)


def _append_events(
    slug: str, readings: list[ValidReading], results: list[Any]
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """The new ids, and the group events to send: the readings, and "online" if it just came."""
    ids = [r.decode() if isinstance(r, bytes) else r for r in results[: len(readings)]]
    frames = [reading_frame(slug, i, r) for i, r in zip(ids, readings, strict=True)]
    event = {"type": "socket.frames", "frames": frames, "ids": ids}
    events = [(sensor_group_name(slug), event), (OVERVIEW_GROUP, event)]
    if results[-1] == 1:  # SADD added it: the sensor was offline until now
        status = frame_event({"type": "status", "sensor": slug, "online": True})
        events += [(sensor_group_name(slug), status), (OVERVIEW_GROUP, status)]
    return ids, events


def readings_append(*, slug: str, readings: list[ValidReading]) -> list[str]:
    """Append validated readings to the sensor's stream, then send them live (sync)."""
    pipe = get_redis().pipeline(transaction=False)
    _queue_append(pipe, slug, readings, int(time.time() * 1000))
    ids, events = _append_events(slug, readings, pipe.execute())
    for group, event in events:
        group_send_sync(group, event)
    return ids


async def readings_append_async(*, slug: str, readings: list[ValidReading]) -> list[str]:
    """Append validated readings to the sensor's stream, then send them live (async)."""
    pipe = get_async_redis().pipeline(transaction=False)
    _queue_append(pipe, slug, readings, int(time.time() * 1000))
    ids, events = _append_events(slug, readings, await pipe.execute())
    layer = get_channel_layer()
    for group, event in events:
        await layer.group_send(group, event)
    return ids


# --- online status -----------------------------------------------------------------------


def sensors_offline_sweep(*, now_ms: int | None = None) -> list[str]:
    """Mark sensors silent for SENSOR_OFFLINE_AFTER offline and say so; returns their slugs."""
    client = get_redis()
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    limit_ms = settings.SENSOR_OFFLINE_AFTER * 1000
    gone = []
    for raw in client.smembers(ONLINE_KEY):
        slug = raw.decode()
        last = client.hget(LAST_SEEN_KEY, slug)
        if last is not None and now_ms - int(last) <= limit_ms:
            continue
        if client.srem(ONLINE_KEY, slug):  # only one sweeper announces it
            status = {"type": "status", "sensor": slug, "online": False}
            for group in (sensor_group_name(slug), OVERVIEW_GROUP):
                broadcast_sync(group, status)
            gone.append(slug)
    return gone


def sensors_last_seen_store(*, slugs: Iterable[str]) -> None:
    """Copy the last-seen times kept in Redis to the Sensor rows (off the hot path)."""
    client = get_redis()
    for slug in slugs:
        last = client.hget(LAST_SEEN_KEY, slug)
        if last is not None:
            seen = datetime.fromtimestamp(int(last) / 1000, tz=UTC)
            Sensor.objects.filter(slug=slug).update(last_seen_at=seen)
