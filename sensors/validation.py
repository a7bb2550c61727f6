"""Validation of published readings: all of a batch is valid, or none of it is stored."""

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from sensors.errors import SensorError

METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class ValidReading:
    """A reading that passed validation: Unix milliseconds and metric values."""

    ts_ms: int
    values: dict[str, float]


def readings_validate(body: Any, *, now_ms: int | None = None) -> list[ValidReading]:
    """One reading or a list of up to SENSOR_MAX_BATCH; raise SensorError at the first bad one."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    items = body if isinstance(body, list) else [body]
    if not items:
        raise SensorError("invalid_reading", "The batch is empty.", extra={"index": 0})
    if len(items) > settings.SENSOR_MAX_BATCH:
        raise SensorError(
            "batch_too_large",
            f"A batch holds at most {settings.SENSOR_MAX_BATCH} readings.",
            status=413,
        )
    valid = []
    for index, item in enumerate(items):
        try:
            valid.append(_reading(item, now_ms))
        except ValueError as exc:
            raise SensorError(
                "invalid_reading", f"Reading {index}: {exc}", extra={"index": index}
            ) from None
    return valid


def _reading(item: Any, now_ms: int) -> ValidReading:
    if not isinstance(item, dict):
        raise ValueError("a reading is a JSON object")
    if "values" in item:
        extra = set(item) - {"ts", "values"}
        if extra:
            raise ValueError(f"unexpected field {sorted(extra)[0]!r} beside values")
        values = item["values"]
    else:
        values = {k: v for k, v in item.items() if k != "ts"}
    return ValidReading(ts_ms=_timestamp(item.get("ts"), now_ms), values=_values(values))


def _values(values: Any) -> dict[str, float]:
    if not isinstance(values, dict) or not values:
        raise ValueError("values must be an object with at least one metric")
    if len(values) > settings.SENSOR_MAX_METRICS:
        raise ValueError(f"at most {settings.SENSOR_MAX_METRICS} metrics a reading")
    clean = {}
    for name, value in values.items():
        if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {str(name)[:40]!r} must match [a-z][a-z0-9_]{{0,31}}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        number = _finite(value)
        if number is None:
            raise ValueError(f"{name} must be a finite number within float range")
        clean[name] = number
    return clean


def parse_time(raw: str) -> int:
    """A query-string time (ISO 8601 or Unix milliseconds) as Unix milliseconds."""
    value: Any = int(raw) if raw.isascii() and raw.isdigit() else raw
    return _as_ms(value)


def _timestamp(ts: Any, now_ms: int) -> int:
    if ts is None:
        return now_ms
    ts_ms = _as_ms(ts)
    if ts_ms > now_ms + settings.SENSOR_MAX_FUTURE_SKEW * 1000:
        raise ValueError("ts is in the future")
    return ts_ms


def _as_ms(ts: Any) -> int:
    if isinstance(ts, bool):
        raise ValueError("ts must be ISO 8601 or Unix milliseconds")
    if isinstance(ts, int | float):
        number = _finite(ts)
        if number is None:
            raise ValueError("ts must be a finite number of Unix milliseconds")
        ts_ms = int(number)
    elif isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("ts must be ISO 8601 or Unix milliseconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts_ms = int(parsed.timestamp() * 1000)
    else:
        raise ValueError("ts must be ISO 8601 or Unix milliseconds")
    if ts_ms < 0:
        raise ValueError("ts must not be before 1970")
    return ts_ms


def _finite(value: int | float) -> float | None:
    """The value as a finite float, or None (NaN, infinities, ints beyond float range)."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
