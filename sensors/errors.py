"""The sensors app's one error type."""

from chatsite.errors import AppError


class SensorError(AppError):
    """A sensor request the client must change or retry."""
