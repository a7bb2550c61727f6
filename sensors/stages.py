"""The processing stages: each is a consumer group of every sensor stream (docs/processing.md)."""

import time
from typing import ClassVar

from sensors.processing import Entry, Stage
from sensors.selectors import entry_data, sensor_slugs_with_rules
from sensors.services import sensors_last_seen_store
from sensors.services_processing import StreamReading, alert_rules_evaluate, readings_store


def entry_reading(entry: Entry) -> StreamReading:
    """A stream entry as the reading it carries (raises on a malformed entry)."""
    data = entry_data(entry.id, entry.fields)
    return StreamReading(slug=entry.slug, id=data["id"], ts_ms=data["ts"], values=data["values"])


class StoreStage(Stage):
    """Keep every reading as Reading rows: the history that outlives the stream's trim."""

    group = "store"
    batch_size = 500
    # Sensor.last_seen_at only backs up the live time kept in Redis, so it is copied at
    # most this often (seconds) rather than with an UPDATE per sensor in every batch.
    last_seen_every: ClassVar[float] = 1.0

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._seen_due = 0.0

    def handle(self, entries: list[Entry]) -> None:
        """Bulk-insert the readings; duplicates of a re-delivery are ignored."""
        readings_store(readings=[entry_reading(e) for e in entries])
        self._seen.update(e.slug for e in entries)
        if time.monotonic() >= self._seen_due:
            sensors_last_seen_store(slugs=sorted(self._seen))
            self._seen.clear()
            self._seen_due = time.monotonic() + self.last_seen_every


class AlertStage(Stage):
    """Evaluate alert rules: fire (push, email) and clear alerts."""

    group = "alerts"

    def handle(self, entries: list[Entry]) -> None:
        """Apply the readings of sensors that have rules to those rules, in stream order."""
        ruled = sensor_slugs_with_rules(slugs={e.slug for e in entries})
        readings = [entry_reading(e) for e in entries if e.slug in ruled]
        if readings:
            alert_rules_evaluate(readings=readings)


# The stages `manage.py process_readings` runs, by name. A new stage is one more line here.
STAGES: dict[str, type[Stage]] = {
    StoreStage.group: StoreStage,
    AlertStage.group: AlertStage,
}
