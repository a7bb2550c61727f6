"""Sensors, their stored readings, alert rules and alerts, and dead-lettered entries."""

import re

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,49}$"


STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?", re.ASCII)
STREAM_ID_PART_MAX = 2**64 - 1


def stream_id_valid(entry_id: str) -> bool:
    """Whether a client-given id is one Redis accepts: ms[-seq], each part below 2**64."""
    match = STREAM_ID.fullmatch(entry_id)
    return bool(match) and all(
        int(part) <= STREAM_ID_PART_MAX for part in match.groups() if part is not None
    )


def stream_id_tuple(entry_id: str) -> tuple[int, int]:
    """A stream id as a comparable (milliseconds, sequence) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def stream_key(slug: str) -> str:
    """The Redis Stream holding a sensor's readings."""
    return f"sensors:readings:{slug}"


def sensor_group_name(slug: str) -> str:
    """The channel-layer group of the sockets watching one sensor."""
    return f"sensors.sensor.{slug}"


def publisher_group_name(slug: str) -> str:
    """The channel-layer group of a sensor's publishing sockets (told to go on key change)."""
    return f"sensors.publisher.{slug}"


OVERVIEW_GROUP = "sensors.overview"


class Sensor(models.Model):
    """A device that publishes readings, authenticated by a key stored only as a hash."""

    slug = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(SLUG_PATTERN, "lowercase letters, digits, - and _")],
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    units = models.JSONField(default=dict, blank=True, help_text='e.g. {"temperature": "°C"}')
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    key_hash = models.CharField(max_length=64, editable=False)
    key_prefix = models.CharField(max_length=8, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug

    @property
    def stream_key(self) -> str:
        return stream_key(self.slug)

    @property
    def group_name(self) -> str:
        return sensor_group_name(self.slug)


class Reading(models.Model):
    """One metric value of one reading: the long-term history, outliving the stream's trim."""

    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="readings")
    stream_id = models.CharField(max_length=32)  # the reading's id everywhere
    ts_ms = models.BigIntegerField()  # Unix milliseconds: buckets are integer division
    metric = models.CharField(max_length=32)
    value = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sensor", "stream_id", "metric"], name="sensors_reading_unique"
            )
        ]
        indexes = [models.Index(fields=["sensor", "ts_ms"], name="sensors_reading_sensor_ts")]

    def __str__(self) -> str:
        return f"{self.sensor_id} {self.stream_id} {self.metric}={self.value}"


class AlertRule(models.Model):
    """Fire an alert while a sensor's metric compares to a threshold for long enough."""

    class Operator(models.TextChoices):
        GT = ">"
        GTE = ">="
        LT = "<"
        LTE = "<="

    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=100, blank=True)
    metric = models.CharField(max_length=32)
    operator = models.CharField(max_length=2, choices=Operator.choices)
    threshold = models.FloatField()
    duration_seconds = models.PositiveIntegerField(
        default=0, help_text="how long the condition must hold before the alert fires"
    )
    notify_email = models.EmailField(blank=True, help_text="where to send the notification")
    active = models.BooleanField(default=True)
    # When the condition started holding (reading time), while it holds and has not fired.
    condition_since_ms = models.BigIntegerField(null=True, blank=True, editable=False)

    def __str__(self) -> str:
        return self.name or f"{self.sensor} {self.metric} {self.operator} {self.threshold}"


class Alert(models.Model):
    """A fired alert; active until cleared. At most one active alert per rule."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    sensor = models.ForeignKey(Sensor, on_delete=models.CASCADE, related_name="alerts")
    metric = models.CharField(max_length=32)
    value = models.FloatField()
    stream_id = models.CharField(max_length=32)
    fired_at = models.DateTimeField(default=timezone.now)
    cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule"], condition=Q(cleared_at=None), name="sensors_alert_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} at {self.fired_at:%Y-%m-%d %H:%M:%S}"


class DeadLetter(models.Model):
    """A stream entry that kept failing in a processing stage, set aside with its error."""

    stream = models.CharField(max_length=100)
    group = models.CharField(max_length=50)
    entry_id = models.CharField(max_length=32)
    fields = models.JSONField(default=dict)
    error = models.TextField(blank=True)
    deliveries = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["stream", "group", "entry_id"], name="sensors_deadletter_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.group} {self.stream} {self.entry_id}"
