"""`manage.py purge_readings [--days N]`: delete stored readings older than the retention."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sensors.services_processing import readings_purge


class Command(BaseCommand):
    """One retention purge (process_readings also runs one every hour)."""

    help = "Delete readings older than SENSOR_RETENTION_DAYS (or --days)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--days", type=int, default=settings.SENSOR_RETENTION_DAYS)

    def handle(self, *args: Any, days: int, **options: Any) -> None:
        if days <= 0:
            raise CommandError("Retention is off (0 days): nothing to purge.")
        deleted = readings_purge(older_than_days=days)
        self.stdout.write(f"Deleted {deleted} readings older than {days} days.")
