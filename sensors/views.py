"""HTTP of the sensors app: the JSON API (publishing and history) and the dashboard pages."""

from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_safe

from chatsite.api import json_api
from sensors.consumers import bearer_key
from sensors.errors import SensorError
from sensors.models import Alert, Sensor
from sensors.selectors import (
    readings_buckets,
    readings_history,
    sensor_authenticate,
    sensor_get,
    sensor_state,
    sensors_list,
)
from sensors.serializers import alert_data
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
    return JsonResponse({"ids": readings_append(slug=slug, readings=readings)}, status=202)


@json_api(methods=["GET"])
def sensors_index(request: HttpRequest, data: Any) -> JsonResponse:
    """GET /api/sensors: every sensor with its latest values, last seen and online state."""
    _require_watcher(request)
    return JsonResponse({"sensors": sensors_list()})


def _readings_index(request: HttpRequest, slug: str) -> JsonResponse:
    """?since=&until=&limit= raw readings, newest last; &bucket=<s>: the newest `limit` buckets."""
    _require_watcher(request)
    sensor = sensor_get(slug=slug)
    since = _query_time(request, "since")
    until = _query_time(request, "until")
    bucket = _query_int(request, "bucket", default=None, low=1, high=365 * 86400)
    limit = _query_int(request, "limit", default=1000, low=1, high=MAX_LIMIT)
    if bucket is not None:
        buckets = readings_buckets(
            sensor=sensor, since_ms=since, until_ms=until, bucket_seconds=bucket, limit=limit
        )
        return JsonResponse({"sensor": slug, "bucket": bucket, "buckets": buckets})
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


# --- pages -------------------------------------------------------------------------------

# The pages load only their own scripts and styles and talk only to their own origin.
# (uPlot sizes its elements through element.style, which CSP's style-src does not govern.)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_ALERTS = 50  # the newest alerts a sensor page starts with (active ones always)


def _login_redirect(request: HttpRequest) -> HttpResponse | None:
    """Send anonymous visitors to the admin login when watching needs a login."""
    if settings.SENSOR_WATCH_REQUIRES_LOGIN and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    return None


def _page(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    response = render(request, template, context)
    response["Content-Security-Policy"] = PAGE_CSP
    return response


def _alerts_data(alerts: Any) -> list[dict[str, Any]]:
    return [alert_data(a) for a in alerts.select_related("rule", "sensor")]


@require_safe
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """GET /sensors/: a live card per sensor (behaviour in static/sensors/dashboard.js)."""
    if (redirect := _login_redirect(request)) is not None:
        return redirect
    active = Alert.objects.filter(cleared_at=None, sensor__active=True)
    config = {
        "socketPath": "/ws/sensors",
        "sensorsUrl": reverse("sensors-index"),
        "pagePrefix": reverse("sensors-dashboard"),
        "offlineAfterSeconds": settings.SENSOR_OFFLINE_AFTER,
        "activeAlerts": _alerts_data(active),
        "loginUrl": reverse("admin:login"),
    }
    return _page(request, "sensors/dashboard.html", {"config": config})


@require_safe
def sensor_page(request: HttpRequest, slug: str) -> HttpResponse:
    """GET /sensors/<slug>/: live charts, a range selector and the sensor's alerts."""
    if (redirect := _login_redirect(request)) is not None:
        return redirect
    sensor = get_object_or_404(Sensor, slug=slug)
    state = sensor_state(slugs=[slug])[slug]
    recent = list(sensor.alerts.all()[:PAGE_ALERTS].values_list("pk", flat=True))
    alerts = sensor.alerts.filter(Q(cleared_at=None) | Q(pk__in=recent))
    config = {
        "sensor": slug, "name": sensor.name, "description": sensor.description,
        "units": sensor.units, "active": sensor.active, **state,
        "socketPath": f"/ws/sensors/{slug}",
        "readingsUrl": reverse("sensors-readings", args=[slug]),
        "dashboardUrl": reverse("sensors-dashboard"),
        "offlineAfterSeconds": settings.SENSOR_OFFLINE_AFTER,
        "alerts": _alerts_data(alerts),
        "loginUrl": reverse("admin:login"),
    }  # fmt: skip
    return _page(request, "sensors/sensor.html", {"sensor": sensor, "config": config})
