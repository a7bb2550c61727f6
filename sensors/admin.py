"""Operators' view of sensors, readings, alert rules, alerts and dead letters.

A sensor's key is never stored: the admin shows a new key once, in a message on the page
that follows its creation or rotation, and otherwise only the key's first characters.
"""

import json
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, F, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from chatsite.admin_mixins import (
    LiveStateAdminMixin,
    ReadOnlyAdminMixin,
    SecretOnAddAdminMixin,
)
from sensors.models import Alert, AlertRule, DeadLetter, Reading, Sensor
from sensors.selectors import sensor_state
from sensors.services import sensor_create, sensor_deactivate, sensor_delete, sensor_key_rotate
from sensors.validation import METRIC_NAME

SHORT_ERROR_CHARS = 80
KEY_SHOWN_ONCE = "Copy it now: it is shown only this once and cannot be shown again."


def datetime_from_ms(ms: int | None) -> datetime | None:
    """Unix milliseconds as an aware datetime (UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms is not None else None


def pretty_json(value: Any) -> SafeString:
    """A JSON value, indented, in a <pre> block."""
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


# --- sensors -----------------------------------------------------------------------------


class SensorForm(forms.ModelForm):
    """A sensor's editable fields; units must be a JSON object of metric name -> unit."""

    class Meta:
        model = Sensor
        fields = ["slug", "name", "description", "units", "active"]

    def clean_units(self) -> dict[str, str]:
        units = self.cleaned_data.get("units")
        if units in (None, ""):
            return {}
        if not isinstance(units, dict):
            raise forms.ValidationError('Units must be a JSON object, e.g. {"temperature": "°C"}.')
        for metric, unit in units.items():
            if not METRIC_NAME.fullmatch(metric):
                raise forms.ValidationError(
                    f"Metric name {metric[:40]!r} must match [a-z][a-z0-9_]{{0,31}}."
                )
            if not isinstance(unit, str):
                raise forms.ValidationError(f"The unit of {metric} must be a string.")
        return units


class SensorAddForm(SensorForm):
    """The add form: no active flag (new sensors are active); the name defaults to the slug."""

    class Meta(SensorForm.Meta):
        fields = ["slug", "name", "description", "units"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["name"].help_text = "Defaults to the slug."


@admin.register(Sensor)
class SensorAdmin(SecretOnAddAdminMixin, LiveStateAdminMixin, admin.ModelAdmin):
    """Sensors with their live state; create them, rotate their keys or deactivate them."""

    live_attribute = "_live_state"
    live_unavailable = "Redis is unavailable: online state unknown."

    def live_state(self, slugs: list[str]) -> dict[str, Any]:
        return sensor_state(slugs=slugs)

    form = SensorForm
    add_form = SensorAddForm
    list_display = ["slug", "name", "active", "online", "last_seen", "key", "created_at"]
    list_filter = ["active"]
    search_fields = ["slug", "name", "description", "key_prefix"]
    ordering = ["slug"]
    readonly_fields = ["key", "created_at", "last_seen_at"]
    actions = ["rotate_keys", "deactivate"]

    def get_form(self, request: HttpRequest, obj: Sensor | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Sensor | None = None) -> list[str]:
        if obj is None:
            return ["slug", "name", "description", "units"]
        return ["slug", "name", "description", "units", "active", "key", "created_at",
                "last_seen_at"]  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: Sensor | None = None) -> list[str]:
        if obj is None:
            return []
        # The slug names the sensor's stream and groups: renaming it would orphan them.
        return ["slug", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: Sensor, form: Any, change: bool) -> None:
        """Adds make the key (shown once); unticking "active" also closes publishers."""
        super().save_model(request, obj, form, change)
        if change and "active" in form.changed_data and not obj.active:
            sensor_deactivate(sensor=obj)  # closes connected publishers too

    def delete_model(self, request: HttpRequest, obj: Sensor) -> None:
        """Delete through the service, which also drops the sensor's stream in Redis."""
        sensor_delete(sensor=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The bulk "delete selected" action, one sensor at a time through the service."""
        with transaction.atomic():
            for sensor in queryset:
                sensor_delete(sensor=sensor)

    def create_with_secret(self, obj: Sensor) -> tuple[Sensor, str]:
        return sensor_create(
            slug=obj.slug, name=obj.name, description=obj.description, units=obj.units
        )

    def secret_message(self, obj: Sensor, secret: str) -> str:
        return format_html(
            "The key of sensor “{}” is <code>{}</code>. {}", obj.slug, secret, KEY_SHOWN_ONCE
        )

    @admin.display(description="online", boolean=True)
    def online(self, sensor: Sensor) -> bool | None:
        """Whether the sensor is online now (unknown when its state was not read)."""
        state = getattr(sensor, "_live_state", None)
        return state["online"] if state is not None else None

    @admin.display(description="last seen", ordering="last_seen_at")
    def last_seen(self, sensor: Sensor) -> datetime | None:
        """The last reading's arrival: live from Redis, else the time stored in the row."""
        state = getattr(sensor, "_live_state", None)
        if state is not None and state["last_seen"] is not None:
            return datetime_from_ms(state["last_seen"])
        return sensor.last_seen_at

    @admin.display(description="key", ordering="key_prefix")
    def key(self, sensor: Sensor) -> str:
        """The key's first characters only."""
        return f"{sensor.key_prefix}…" if sensor.key_prefix else "-"

    @admin.action(description="Rotate key of selected sensors", permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Give each selected sensor a new key, shown once; the old keys stop working."""
        sensors = list(queryset.order_by("slug"))
        with transaction.atomic():  # all new keys are shown, or none is made
            keys = [(sensor, sensor_key_rotate(sensor=sensor)) for sensor in sensors]
        for sensor, _ in keys:
            self.log_change(request, sensor, f"Rotated the key (new prefix {sensor.key_prefix}).")
        if len(keys) == 1:
            sensor, key = keys[0]
            message = format_html(
                "The new key of sensor “{}” is <code>{}</code>. {}", sensor.slug, key,
                KEY_SHOWN_ONCE,
            )  # fmt: skip
        else:
            listing = format_html_join(
                "; ", "“{}”: <code>{}</code>", ((s.slug, k) for s, k in keys)
            )
            message = format_html("New keys of {} sensors: {}. {}", len(keys), listing,
                                  KEY_SHOWN_ONCE)  # fmt: skip
        self.message_user(request, message, messages.WARNING)

    @admin.action(description="Deactivate selected sensors", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Stop accepting the selected sensors' readings; their publishers are closed."""
        sensors = list(queryset.filter(active=True))
        with transaction.atomic():
            for sensor in sensors:
                sensor_deactivate(sensor=sensor)
        for sensor in sensors:
            self.log_change(request, sensor, "Deactivated.")
        self.message_user(request, f"Deactivated {len(sensors)} sensor(s).", messages.SUCCESS)


# --- readings ----------------------------------------------------------------------------


@admin.register(Reading)
class ReadingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The stored history, one metric value a row, read-only."""

    list_display = ["sensor", "stream_id", "ts", "metric", "value"]
    list_filter = ["sensor", "metric"]
    list_select_related = ["sensor"]
    search_fields = ["stream_id"]
    ordering = ["-ts_ms", "-id"]
    show_full_result_count = False
    fields = ["sensor", "stream_id", "ts", "ts_ms", "metric", "value"]
    readonly_fields = fields

    @admin.display(description="time", ordering="ts_ms")
    def ts(self, reading: Reading) -> datetime | None:
        """The reading's time (its Unix milliseconds as a date)."""
        return datetime_from_ms(reading.ts_ms)


# --- alert rules and alerts --------------------------------------------------------------


class AlertRuleForm(forms.ModelForm):
    """A rule; its metric is named like the metrics sensors publish."""

    class Meta:
        model = AlertRule
        fields = [
            "sensor", "name", "metric", "operator", "threshold", "duration_seconds",
            "notify_email", "active",
        ]  # fmt: skip

    def clean_metric(self) -> str:
        metric = self.cleaned_data["metric"]
        if not METRIC_NAME.fullmatch(metric):
            raise forms.ValidationError("A metric name must match [a-z][a-z0-9_]{0,31}.")
        return metric


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    """Rules operators write; each links to the alerts it fired."""

    form = AlertRuleForm
    list_display = [
        "__str__", "sensor", "metric", "operator", "threshold", "duration", "active",
        "notify_email", "alerts_link",
    ]  # fmt: skip
    list_filter = ["active", "sensor", "operator"]
    list_select_related = ["sensor"]
    search_fields = ["name", "metric", "sensor__slug", "sensor__name", "notify_email"]
    ordering = ["sensor__slug", "metric", "id"]
    fields = [
        "sensor", "name", "metric", "operator", "threshold", "duration_seconds", "notify_email",
        "active", "alerts_link",
    ]  # fmt: skip
    readonly_fields = ["alerts_link"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_alert_count=Count("alerts"))

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, rule: AlertRule) -> str:
        """How long the condition must hold, in seconds."""
        return f"{rule.duration_seconds} s"

    @admin.display(description="alerts", ordering="_alert_count")
    def alerts_link(self, rule: AlertRule) -> str:
        """How many alerts the rule fired, linking to them."""
        if rule.pk is None:
            return "-"
        count = getattr(rule, "_alert_count", None)
        count = rule.alerts.count() if count is None else count
        url = reverse("admin:sensors_alert_changelist") + f"?rule__id__exact={rule.pk}"
        return format_html('<a href="{}">{} alert(s)</a>', url, count)


class ActiveFilter(admin.SimpleListFilter):
    """Active alerts (not cleared), or cleared ones."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("cleared", "Cleared")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "active":
            return queryset.filter(cleared_at__isnull=True)
        if self.value() == "cleared":
            return queryset.filter(cleared_at__isnull=False)
        return queryset


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """Fired alerts, active ones first, read-only."""

    list_display = [
        "rule", "sensor", "metric", "value", "fired_at", "cleared_at", "is_active",
    ]  # fmt: skip
    list_filter = [ActiveFilter, "sensor", "fired_at"]
    list_select_related = ["rule", "rule__sensor", "sensor"]
    search_fields = ["rule__name", "metric", "sensor__slug", "sensor__name"]
    ordering = [F("cleared_at").desc(nulls_first=True), "-fired_at"]
    fields = ["rule", "sensor", "metric", "value", "stream_id", "fired_at", "cleared_at",
              "is_active"]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="active", boolean=True, ordering="cleared_at")
    def is_active(self, alert: Alert) -> bool:
        """Whether the alert has not been cleared."""
        return alert.cleared_at is None


# --- dead letters ------------------------------------------------------------------------


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Stream entries that kept failing, with their error; read-only (delete once handled)."""

    list_display = ["created_at", "group", "stream", "entry_id", "deliveries", "short_error"]
    list_filter = ["group", "created_at"]
    search_fields = ["stream", "entry_id", "error"]
    ordering = ["-created_at"]
    fields = ["created_at", "group", "stream", "entry_id", "deliveries", "fields_json",
              "full_error"]  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="error")
    def short_error(self, letter: DeadLetter) -> str:
        """The error's first characters, on one line."""
        return Truncator(" ".join(letter.error.split())).chars(SHORT_ERROR_CHARS)

    @admin.display(description="fields")
    def fields_json(self, letter: DeadLetter) -> SafeString:
        """The entry's fields as indented JSON."""
        return pretty_json(letter.fields)

    @admin.display(description="error")
    def full_error(self, letter: DeadLetter) -> SafeString:
        """The whole error, line breaks kept."""
        return format_html("<pre>{}</pre>", letter.error)
