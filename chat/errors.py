"""The chat app's one error type."""

from chatsite.errors import AppError


class ChatError(AppError):
    """A chat request the client must change or retry."""
