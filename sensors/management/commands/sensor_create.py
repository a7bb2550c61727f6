"""`manage.py sensor_create <slug> [--name ...]`: create a sensor and print its key once."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from sensors.services import sensor_create


class Command(BaseCommand):
    """Create a sensor; its key is shown now and never again (only a hash is kept)."""

    help = "Create a sensor and print its key (shown once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--unit", action="append", default=[], metavar="METRIC=UNIT",
            help="unit of a metric, e.g. --unit temperature=°C (repeatable)",
        )  # fmt: skip

    def handle(self, *args: Any, slug: str, name: str, description: str, unit: list[str],
               **options: Any) -> None:  # fmt: skip
        units = dict(item.split("=", 1) for item in unit if "=" in item)
        try:
            sensor, key = sensor_create(slug=slug, name=name, description=description, units=units)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"Created sensor {sensor.slug!r}. Its key (shown only now):")
        self.stdout.write(key)
