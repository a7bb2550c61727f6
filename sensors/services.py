"""Writes of the sensors app: sensors and keys, appending readings, online status."""

import functools
import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from chatsite.broadcast import group_send_sync
from chatsite.credentials import credential_hash, credential_new, credential_prefix
from chatsite.fanout import live_channel, live_publish_sync
from chatsite.ratelimit import RATE_TAKE_LUA, RateWindow, rate_window
from chatsite.redis_clients import RedisScript, get_redis
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


def sensor_delete(*, sensor: Sensor) -> None:
    """Delete the sensor with its readings; then its stream and live state, and publishers."""
    slug = sensor.slug
    sensor.delete()
    # robust: the row is gone either way; Redis being away must not undo the delete.
    transaction.on_commit(lambda: _sensor_redis_drop(slug), robust=True)


def _sensor_redis_drop(slug: str) -> None:
    # Close publishers first: a connected one would append to the stream again. A sensor
    # made later with the same slug then starts with no history, last-seen or online state.
    _publishers_close(slug)
    pipe = get_redis().pipeline(transaction=True)
    pipe.delete(stream_key(slug))
    pipe.hdel(LAST_SEEN_KEY, slug)
    pipe.srem(ONLINE_KEY, slug)
    pipe.execute()


def _publishers_close(slug: str) -> None:
    group_send_sync(publisher_group_name(slug), {"type": "publisher.revoke"})


# --- appending readings ------------------------------------------------------------------


# Rate limit, append, mark seen and online, and publish live, in one round trip and in
# stream order. KEYS: stream, last-seen hash, online set, rate-limit key. ARGV: window ms,
# cost, limit, maxlen, slug, now ms, the sensor's and the overview's live channels, the
# "online" status frame, the reading frames' head, then per reading: ts and values (JSON).
_APPEND_SCRIPT = RedisScript(
    RATE_TAKE_LUA
    + """
if rate_take(KEYS[4], ARGV[1], ARGV[2], ARGV[3]) == 0 then return false end
local ids, frames = {}, {}
for i = 11, #ARGV, 2 do
  local id = redis.call(
    'XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'ts', ARGV[i], 'v', ARGV[i + 1])
  ids[#ids + 1] = id
  frames[#frames + 1] = ARGV[10] .. id .. '","ts":' .. ARGV[i] .. ',"values":' .. ARGV[i + 1] .. '}'
end
redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
local came_online = redis.call('SADD', KEYS[3], ARGV[5])
-- chatsite.fanout.live_payload's format: the ids on one line, then one frame per line
local event = table.concat(ids, ',') .. '\\n' .. table.concat(frames, '\\n')
redis.call('PUBLISH', ARGV[7], event)
redis.call('PUBLISH', ARGV[8], event)
if came_online == 1 then
  redis.call('PUBLISH', ARGV[7], '\\n' .. ARGV[9])
  redis.call('PUBLISH', ARGV[8], '\\n' .. ARGV[9])
end
return ids
"""
)


# A reading's wire frame is compact JSON: head + stream id + the ts and values the script
# also stores, so the script can put in the id it gets from XADD.
@functools.lru_cache(maxsize=4096)
def _frame_head(slug: str) -> str:
    return '{"type":"reading","sensor":' + json.dumps(slug) + ',"id":"'


@functools.lru_cache(maxsize=4096)
def _online_frame(slug: str) -> str:
    return json.dumps({"type": "status", "sensor": slug, "online": True}, separators=(",", ":"))


def _append_call(
    slug: str, readings: list[ValidReading]
) -> tuple[list[str], list[Any], RateWindow]:
    window = rate_window(scope="sensor", subject=slug, window=settings.SENSOR_RATE_WINDOW)
    keys = [stream_key(slug), LAST_SEEN_KEY, ONLINE_KEY, window.key]
    args: list[Any] = [
        window.window_ms, len(readings), settings.SENSOR_RATE_LIMIT,
        settings.SENSOR_STREAM_MAXLEN, slug, int(time.time() * 1000),
        live_channel(sensor_group_name(slug)), live_channel(OVERVIEW_GROUP),
        _online_frame(slug), _frame_head(slug),
    ]  # fmt: skip
    for reading in readings:
        args += [reading.ts_ms, json.dumps(reading.values, separators=(",", ":"))]
    return keys, args, window


def _appended(ids: list[bytes] | None, window: RateWindow) -> list[str]:
    if ids is None:
        window.refuse()
    return [entry_id.decode() for entry_id in ids or ()]


def readings_append(*, slug: str, readings: list[ValidReading]) -> list[str]:
    """Take from the sensor's rate limit, append to its stream, send live; returns the ids."""
    keys, args, window = _append_call(slug, readings)
    return _appended(_APPEND_SCRIPT.run(keys=keys, args=args), window)


async def readings_append_async(*, slug: str, readings: list[ValidReading]) -> list[str]:
    """Async form of readings_append, for the publish socket."""
    keys, args, window = _append_call(slug, readings)
    return _appended(await _APPEND_SCRIPT.run_async(keys=keys, args=args), window)


def sensor_live_send(*, slug: str, payload: dict[str, Any]) -> None:
    """Send one frame live to the sensor's watchers and to the overview (sync code)."""
    frame = json.dumps(payload)
    for group in (sensor_group_name(slug), OVERVIEW_GROUP):
        live_publish_sync(group, [frame])


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
            sensor_live_send(slug=slug, payload={"type": "status", "sensor": slug, "online": False})
            gone.append(slug)
    sensors_last_seen_store(slugs=gone)  # the rows' final times, now that the sensors are quiet
    return gone


def sensors_last_seen_store(*, slugs: Iterable[str]) -> None:
    """Copy the last-seen times kept in Redis to the Sensor rows (off the hot path)."""
    slugs = list(slugs)
    if not slugs:
        return
    for slug, last in zip(slugs, get_redis().hmget(LAST_SEEN_KEY, slugs), strict=True):
        if last is not None:
            seen = datetime.fromtimestamp(int(last) / 1000, tz=UTC)
            Sensor.objects.filter(slug=slug).update(last_seen_at=seen)
