"""Percentile summaries shared by the benchmark scripts (run as `python bench/<name>.py`)."""

import math


def percentile(ordered: list[float], pct: float) -> float | None:
    """The pct-th percentile of sorted values (linear interpolation between ranks), or None."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentile_summary(
    values: list[float], *, scale: float = 1.0, digits: int = 2
) -> dict[str, float | int | None]:
    """Count, p50/p95/p99 and max of values times scale, rounded to digits."""
    ordered = sorted(values)

    def scaled(value: float | None) -> float | None:
        return None if value is None else round(value * scale, digits)

    return {
        "n": len(ordered),
        "p50": scaled(percentile(ordered, 50)),
        "p95": scaled(percentile(ordered, 95)),
        "p99": scaled(percentile(ordered, 99)),
        "max": scaled(ordered[-1] if ordered else None),
    }
