"""Reads of the sensors app: authentication, the live stream, and the stored history."""

import json
from typing import Any

from django.db.models import Avg, Count, F, Max, Min

from chatsite.credentials import credential_matches
from chatsite.redis_clients import get_async_redis, get_redis
from sensors.errors import SensorError
from sensors.models import Alert, AlertRule, Reading, Sensor, stream_id_tuple, stream_key
from sensors.serializers import alert_data
from sensors.services import LAST_SEEN_KEY, ONLINE_KEY

UNAUTHORIZED = "Unknown or inactive sensor, or wrong key."


def sensor_authenticate(*, slug: str, key: str | None) -> Sensor:
    """The active sensor whose key this is; one answer for every failure (no hints)."""
    sensor = Sensor.objects.filter(slug=slug, active=True).first() if key else None
    if sensor is None or not credential_matches(key or "", sensor.key_hash):
        raise SensorError("unauthorized", UNAUTHORIZED, status=401)
    return sensor


def sensor_get(*, slug: str) -> Sensor:
    """A sensor by slug, or SensorError(not_found)."""
    sensor = Sensor.objects.filter(slug=slug).first()
    if sensor is None:
        raise SensorError("not_found", "No such sensor.", status=404)
    return sensor


def sensor_slugs_with_rules(*, slugs: set[str]) -> set[str]:
    """Which of these sensors have an active alert rule."""
    return set(
        AlertRule.objects.filter(active=True, sensor__slug__in=slugs)
        .values_list("sensor__slug", flat=True)
        .distinct()
    )


def entry_data(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """A stream entry as a reading: {"id", "ts", "values"}."""
    return {
        "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        "ts": int(fields[b"ts"]),
        "values": json.loads(fields[b"v"]),
    }


async def readings_latest_async(*, slug: str, count: int) -> list[dict[str, Any]]:
    """The newest `count` readings in the stream, oldest first."""
    entries = await get_async_redis().xrevrange(stream_key(slug), count=count)
    return [entry_data(i, f) for i, f in reversed(entries)]


async def readings_after_async(*, slug: str, after: str, limit: int) -> list[dict[str, Any]]:
    """Readings after a stream id (exclusive), oldest first, at most `limit`."""
    entries = await get_async_redis().xrange(stream_key(slug), min=f"({after}", count=limit)
    return [entry_data(i, f) for i, f in entries]


def sensor_state(*, slugs: list[str]) -> dict[str, dict[str, Any]]:
    """Per sensor: online, last seen (Unix ms) and latest reading, in one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    for slug in slugs:
        pipe.sismember(ONLINE_KEY, slug)
        pipe.hget(LAST_SEEN_KEY, slug)
        pipe.xrevrange(stream_key(slug), count=1)
    results = pipe.execute()
    state = {}
    for index, slug in enumerate(slugs):
        online, last_seen, latest = results[index * 3 : index * 3 + 3]
        state[slug] = {
            "online": bool(online),
            "last_seen": int(last_seen) if last_seen is not None else None,
            "latest": entry_data(*latest[0]) if latest else None,
        }
    return state


def sensors_list() -> list[dict[str, Any]]:
    """Every active sensor with its units, latest values, last seen and online state."""
    sensors = list(Sensor.objects.filter(active=True))
    state = sensor_state(slugs=[s.slug for s in sensors])
    alerts: dict[int, list[dict[str, Any]]] = {}
    for alert in Alert.objects.filter(cleared_at=None, sensor__active=True).select_related(
        "rule", "sensor"
    ):
        alerts.setdefault(alert.sensor_id, []).append(alert_data(alert))
    return [{**_sensor_data(s), **state[s.slug], "alerts": alerts.get(s.pk, [])} for s in sensors]


def _sensor_data(sensor: Sensor) -> dict[str, Any]:
    return {"sensor": sensor.slug, "name": sensor.name, "description": sensor.description,
            "units": sensor.units}  # fmt: skip


def readings_history(
    *, sensor: Sensor, since_ms: int | None, until_ms: int | None, limit: int
) -> list[dict[str, Any]]:
    """Stored readings in [since, until], the newest `limit` of them, newest last."""
    rows = Reading.objects.filter(sensor=sensor)
    if since_ms is not None:
        rows = rows.filter(ts_ms__gte=since_ms)
    if until_ms is not None:
        rows = rows.filter(ts_ms__lte=until_ms)
    # Newest `limit` by reading time; ties are ordered by the numeric stream id, which the
    # database cannot do on the text id, so the tie group at the boundary is read whole.
    keys = rows.values_list("stream_id", "ts_ms").distinct()
    newest = list(keys.order_by("-ts_ms")[:limit])
    if len(newest) == limit:
        newest = list(keys.filter(ts_ms__gte=min(ts for _, ts in newest)))
    newest.sort(key=lambda key: (key[1], *stream_id_tuple(key[0])))
    picked = newest[-limit:]
    ids = [stream_id for stream_id, _ in picked]
    readings: dict[str, dict[str, Any]] = {
        stream_id: {"id": stream_id, "ts": ts, "values": {}} for stream_id, ts in picked
    }
    for stream_id, metric, value in rows.filter(stream_id__in=ids).values_list(
        "stream_id", "metric", "value"
    ):
        readings[stream_id]["values"][metric] = value
    return [readings[i] for i in ids]


def readings_buckets(
    *,
    sensor: Sensor,
    since_ms: int | None,
    until_ms: int | None,
    bucket_seconds: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The newest `limit` buckets with readings, oldest first: per metric min/avg/max/count."""
    bucket_ms = bucket_seconds * 1000
    rows = Reading.objects.filter(sensor=sensor)
    if since_ms is not None:
        rows = rows.filter(ts_ms__gte=since_ms)
    if until_ms is not None:
        rows = rows.filter(ts_ms__lte=until_ms)
    rows = rows.annotate(bucket=F("ts_ms") / bucket_ms)
    # The limit-th newest bucket bounds the answer, as `limit` bounds raw readings: a
    # fine bucket over a long range must not build a response of millions of buckets.
    oldest_kept = rows.values_list("bucket", flat=True).distinct().order_by("-bucket")
    boundary = list(oldest_kept[limit - 1 : limit])
    if boundary:
        rows = rows.filter(ts_ms__gte=int(boundary[0]) * bucket_ms)
    grouped = (
        rows.values("bucket", "metric")
        .annotate(min=Min("value"), avg=Avg("value"), max=Max("value"), count=Count("id"))
        .order_by("bucket", "metric")
    )
    buckets: dict[int, dict[str, Any]] = {}
    for row in grouped:
        start = int(row["bucket"]) * bucket_ms
        bucket = buckets.setdefault(start, {"ts": start, "metrics": {}})
        bucket["metrics"][row["metric"]] = {
            "min": row["min"], "avg": row["avg"], "max": row["max"], "count": row["count"],
        }  # fmt: skip
    return list(buckets.values())
