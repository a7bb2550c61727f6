"""The chat app: assistant chat sessions (and, later, rooms)."""

from django.apps import AppConfig


class ChatConfig(AppConfig):
    """App config for chat."""

    name = "chat"
    default_auto_field = "django.db.models.BigAutoField"
