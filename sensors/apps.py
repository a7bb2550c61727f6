"""The sensors app (live telemetry): filled in by a later issue."""

from django.apps import AppConfig


class SensorsConfig(AppConfig):
    """App config for sensors."""

    name = "sensors"
    default_auto_field = "django.db.models.BigAutoField"
