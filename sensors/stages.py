"""The processing stages: each is a consumer group of every sensor stream (docs/processing.md)."""

from sensors.processing import Entry, Stage
from sensors.selectors import entry_data
from sensors.services_processing import StreamReading, alert_rules_evaluate, readings_store


def entry_reading(entry: Entry) -> StreamReading:
    """A stream entry as the reading it carries (raises on a malformed entry)."""
    data = entry_data(entry.id, entry.fields)
    return StreamReading(slug=entry.slug, id=data["id"], ts_ms=data["ts"], values=data["values"])


class StoreStage(Stage):
    """Keep every reading as Reading rows: the history that outlives the stream's trim."""

    group = "store"
    batch_size = 500

    def handle(self, entries: list[Entry]) -> None:
        """Bulk-insert the readings; duplicates of a re-delivery are ignored."""
        readings_store(readings=[entry_reading(e) for e in entries])


class AlertStage(Stage):
    """Evaluate alert rules: fire (push, email) and clear alerts."""

    group = "alerts"

    def handle(self, entries: list[Entry]) -> None:
        """Apply the readings to the rules, in stream order."""
        alert_rules_evaluate(readings=[entry_reading(e) for e in entries])


# The stages `manage.py process_readings` runs, by name. A new stage is one more line here.
STAGES: dict[str, type[Stage]] = {
    StoreStage.group: StoreStage,
    AlertStage.group: AlertStage,
}
