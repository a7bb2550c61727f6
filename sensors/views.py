"""HTTP JSON API of the sensors app: publishing and history."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from chatsite.api import json_api
from chatsite.ratelimit import rate_limit_check
from sensors.consumers import bearer_key
from sensors.errors import SensorError
from sensors.selectors import (
    readings_buckets,
    readings_history,
    sensor_authenticate,
    sensor_get,
    sensors_list,
)
from sensors.services import readings_append
from sensors.validation import parse_time, readings_validate

MAX_LIMIT = 10_000


def _require_watcher(request: HttpRequest) -> None:
    if settings.SENSOR_WATCH_REQUIRES_LOGIN and not request.user.is_authenticated:
        raise SensorError("login_required", "Log in to watch sensors.", status=401)


@json_api(methods=["GET", "POST"], max_bytes=settings.SENSOR_MAX_FRAME_BYTES, allow_list=True)
def readings_endpoint(request: HttpRequest, data: Any, slug: str) -> JsonResponse:
    """/api/sensors/<slug>/readings: GET the stored history, POST new readings."""
    if request.method == "POST":
        return _readings_publish(request, data, slug)
    return _readings_index(request, slug)


def _readings_publish(request: HttpRequest, data: Any, slug: str) -> JsonResponse:
    """One reading or a batch, authenticated by the sensor's key; 202 with the stream ids."""
    headers = [(b"authorization", request.headers.get("Authorization", "").encode("latin-1"))]
    sensor_authenticate(slug=slug, key=bearer_key({"headers": headers}, request.GET.get("key")))
    readings = readings_validate(data)
    rate_limit_check(
        scope="sensor", subject=slug, limit=settings.SENSOR_RATE_LIMIT,
        window=settings.SENSOR_RATE_WINDOW, cost=len(readings),
    )  # fmt: skip
    return JsonResponse({"ids": readings_append(slug=slug, readings=readings)}, status=202)


@json_api(methods=["GET"])
def sensors_index(request: HttpRequest, data: Any) -> JsonResponse:
    """GET /api/sensors: every sensor with its latest values, last seen and online state."""
    _require_watcher(request)
    return JsonResponse({"sensors": sensors_list()})


def _readings_index(request: HttpRequest, slug: str) -> JsonResponse:
    """?since=&until=&limit= raw readings, newest last; &bucket=<s> per-bucket aggregates."""
    _require_watcher(request)
    sensor = sensor_get(slug=slug)
    since = _query_time(request, "since")
    until = _query_time(request, "until")
    bucket = _query_int(request, "bucket", default=None, low=1, high=365 * 86400)
    if bucket is not None:
        buckets = readings_buckets(
            sensor=sensor, since_ms=since, until_ms=until, bucket_seconds=bucket
        )
        return JsonResponse({"sensor": slug, "bucket": bucket, "buckets": buckets})
    limit = _query_int(request, "limit", default=1000, low=1, high=MAX_LIMIT)
    readings = readings_history(sensor=sensor, since_ms=since, until_ms=until, limit=limit)
    return JsonResponse({"sensor": slug, "readings": readings})


def _query_time(request: HttpRequest, name: str) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise SensorError(
            "invalid_query", f"{name} must be ISO 8601 or Unix milliseconds.", field=name
        ) from None


def _query_int(request: HttpRequest, name: str, *, default: int | None, low: int, high: int) -> Any:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise SensorError(
            "invalid_query", f"{name} must be a whole number from {low} to {high}.", field=name
        )
    return int(raw)
