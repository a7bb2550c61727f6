"""Writes of the stream processors: stored readings, alerts, dead letters, retention."""

import functools
import logging
import operator
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models.constants import OnConflict

from sensors.models import (
    Alert,
    AlertRule,
    DeadLetter,
    Reading,
    Sensor,
)
from sensors.serializers import alert_data
from sensors.services import sensor_live_send

logger = logging.getLogger(__name__)

PURGE_BATCH = 10_000
DAY_MS = 24 * 60 * 60 * 1000

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    AlertRule.Operator.GT: operator.gt,
    AlertRule.Operator.GTE: operator.ge,
    AlertRule.Operator.LT: operator.lt,
    AlertRule.Operator.LTE: operator.le,
}


class StreamReading(NamedTuple):
    """One stream entry of a sensor as a reading: its stream id, Unix ms and values."""

    slug: str
    id: str
    ts_ms: int
    values: dict[str, float]


def ms_datetime(ts_ms: int) -> datetime:
    """Unix milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


# --- stored readings -----------------------------------------------------------------------


def readings_store(*, readings: Sequence[StreamReading]) -> int:
    """Insert one Reading row per metric value (a re-delivery adds none); returns rows offered."""
    rows = [
        (r.id, int(r.ts_ms), metric, float(value), r.slug)
        for r in readings
        for metric, value in r.values.items()
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_reading_insert_sql(connection.vendor), rows)
    return len(rows)


@functools.cache
def _reading_insert_sql(vendor: str) -> str:
    """INSERT one reading value by sensor slug, ignoring one already stored (any backend).

    bulk_create built a model instance and compiled SQL per row, five times the cost of
    this one statement run with executemany. The SELECT finds the sensor by its slug, so
    a deleted sensor's readings insert nothing. The unique (sensor, stream_id, metric) and
    the ignored conflict make at-least-once delivery exactly-once rows.
    """
    ops, qn = connection.ops, connection.ops.quote_name
    reading, sensor = Reading._meta, Sensor._meta
    columns = ", ".join(
        qn(reading.get_field(name).column)
        for name in ("sensor", "stream_id", "ts_ms", "metric", "value")
    )
    return (
        f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {qn(reading.db_table)} "
        f"({columns}) SELECT {qn(sensor.pk.column)}, %s, %s, %s, %s "
        f"FROM {qn(sensor.db_table)} WHERE {qn(sensor.get_field('slug').column)} = %s "
        + ops.on_conflict_suffix_sql([], OnConflict.IGNORE, None, None)
    ).strip()


def readings_purge(*, older_than_days: int, now_ms: int | None = None) -> int:
    """Delete readings whose reading time is older than the given days; returns how many."""
    if older_than_days <= 0:
        raise ValueError("older_than_days must be positive")
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    cutoff = now_ms - older_than_days * DAY_MS
    deleted = 0
    while True:
        # In chunks, so one purge never holds the (SQLite: whole-database) write lock long.
        old = Reading.objects.filter(ts_ms__lt=cutoff).values_list("pk", flat=True)
        ids = list(old[:PURGE_BATCH])
        if not ids:
            return deleted
        count, _ = Reading.objects.filter(pk__in=ids).delete()
        deleted += count


# --- alerts --------------------------------------------------------------------------------


def rule_holds(*, rule: AlertRule, value: float) -> bool:
    """Whether the value satisfies the rule's condition (the alerting side)."""
    return OPERATORS[rule.operator](value, rule.threshold)


def alert_rules_evaluate(*, readings: Sequence[StreamReading]) -> list[Alert]:
    """Apply the readings, in order, to their sensors' active rules: fire and clear alerts.

    Returns the alerts fired or cleared. Pushes and emails go out after the commit.
    """
    changed: list[Alert] = []
    with transaction.atomic():
        # Locked (Postgres; SQLite's immediate transactions serialise writers anyway) so
        # two consumers applying readings of one sensor don't race on condition_since_ms.
        rules = list(
            AlertRule.objects.select_for_update(of=("self",))
            .select_related("sensor")
            .filter(active=True, sensor__slug__in={r.slug for r in readings})
            .order_by("pk")
        )
        if not rules:
            return changed
        by_metric: dict[tuple[str, str], list[AlertRule]] = defaultdict(list)
        for rule in rules:
            by_metric[(rule.sensor.slug, rule.metric)].append(rule)
        active = {a.rule_id: a for a in Alert.objects.filter(rule__in=rules, cleared_at=None)}
        since_before = {rule.pk: rule.condition_since_ms for rule in rules}
        for reading in readings:
            for metric, value in reading.values.items():
                for rule in by_metric.get((reading.slug, metric), ()):
                    alert = _rule_apply(rule=rule, reading=reading, value=value, active=active)
                    if alert is not None:
                        changed.append(alert)
        for rule in rules:
            if rule.condition_since_ms != since_before[rule.pk]:
                rule.save(update_fields=["condition_since_ms"])
    return changed


def _rule_apply(
    *, rule: AlertRule, reading: StreamReading, value: float, active: dict[int, Alert]
) -> Alert | None:
    if not rule_holds(rule=rule, value=value):
        rule.condition_since_ms = None
        alert = active.pop(rule.pk, None)
        return _alert_clear(alert=alert, reading=reading) if alert is not None else None
    if rule.pk in active:
        return None
    if rule.condition_since_ms is None:
        rule.condition_since_ms = reading.ts_ms
    if reading.ts_ms - rule.condition_since_ms < rule.duration_seconds * 1000:
        return None
    rule.condition_since_ms = None
    alert, fired = _alert_fire(rule=rule, reading=reading, value=value)
    if alert is not None:
        active[rule.pk] = alert
    return alert if fired else None


def _alert_fire(
    *, rule: AlertRule, reading: StreamReading, value: float
) -> tuple[Alert | None, bool]:
    """Create the rule's active alert; (the active alert, whether this call created it)."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule, sensor=rule.sensor, metric=rule.metric, value=value,
                stream_id=reading.id, fired_at=ms_datetime(reading.ts_ms),
            )  # fmt: skip
    except IntegrityError:
        # The one-active-per-rule constraint: another consumer fired it first.
        existing = Alert.objects.filter(rule=rule, cleared_at=None).first()
        return existing, False
    data = alert_data(alert)
    recipients = [rule.notify_email] if rule.notify_email else list(settings.ALERT_EMAIL_TO)
    transaction.on_commit(lambda: _alert_push(data), robust=True)
    if recipients:
        transaction.on_commit(lambda: _alert_email(data, str(rule), recipients), robust=True)
    return alert, True


def _alert_clear(*, alert: Alert, reading: StreamReading) -> Alert | None:
    cleared_at = max(ms_datetime(reading.ts_ms), alert.fired_at)
    if not Alert.objects.filter(pk=alert.pk, cleared_at=None).update(cleared_at=cleared_at):
        return None  # another consumer cleared it first, and pushed that
    alert.cleared_at = cleared_at
    data = alert_data(alert)
    transaction.on_commit(lambda: _alert_push(data), robust=True)
    return alert


def _alert_push(data: dict[str, Any]) -> None:
    sensor_live_send(slug=data["sensor"], payload={"type": "alert", "alert": data})


def _alert_email(data: dict[str, Any], rule_name: str, recipients: list[str]) -> None:
    subject = f"Alert: {rule_name}"
    body = (
        f"Sensor {data['sensor']}: {data['metric']} = {data['value']:g} "
        f"({data['operator']} {data['threshold']:g}) at {data['fired_at']}.\n"
        f"Rule {data['rule']}, reading {data['stream_id']}, alert {data['id']}.\n"
    )
    send_mail(subject, body, None, recipients)


# --- dead letters --------------------------------------------------------------------------


def dead_letter_create(
    *, stream: str, group: str, entry_id: str, fields: dict[str, str], error: str, deliveries: int
) -> DeadLetter:
    """Set a failing stream entry aside with its last error (again: updates the row)."""
    dead, _ = DeadLetter.objects.update_or_create(
        stream=stream, group=group, entry_id=entry_id,
        defaults={"fields": fields, "error": error, "deliveries": deliveries},
    )  # fmt: skip
    return dead
