"""Wire shapes of sensor objects (one place, used by sockets, HTTP and pages alike)."""

from typing import Any

from sensors.models import Alert


def alert_data(alert: Alert) -> dict[str, Any]:
    """The alert object of the `alert` frame."""
    rule = alert.rule
    return {
        "id": alert.pk,
        "rule": rule.pk,
        "rule_name": rule.name,
        "sensor": alert.sensor.slug,
        "metric": alert.metric,
        "operator": rule.operator,
        "threshold": rule.threshold,
        "value": alert.value,
        "fired_at": alert.fired_at.isoformat(),
        "cleared_at": alert.cleared_at.isoformat() if alert.cleared_at else None,
        "stream_id": alert.stream_id,
    }
