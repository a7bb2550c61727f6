"""Chat sessions with the assistant and their messages."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from chat.message_base import AnswerableMessage


def session_group_name(session_id: int) -> str:
    """The channel-layer group of every socket open on one session."""
    return f"chat.session.{session_id}"


class ChatSession(models.Model):
    """A conversation with the assistant, reached by a bearer token (stored hashed)."""

    name = models.CharField(max_length=80)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=8, db_index=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    last_activity_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}…)"

    @property
    def group_name(self) -> str:
        """The channel-layer group of this session's sockets."""
        return session_group_name(self.pk)

    def is_expired(self) -> bool:
        """Whether the session has passed its expiry."""
        return self.expires_at <= timezone.now()


class ChatMessage(AnswerableMessage):
    """A user message, or the assistant's reply to one."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="replies"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "client_id"],
                condition=Q(client_id__isnull=False),
                name="chat_message_unique_client_id",
            )
        ]
        indexes = [
            models.Index(fields=["session", "id"], name="chat_message_session_id"),
            models.Index(fields=["session", "status"], name="chat_message_session_status"),
            # The worker's supervisor looks for unsettled replies every few seconds.
            models.Index(
                fields=["id"],
                condition=Q(status__in=["pending", "streaming"]),
                name="chat_message_unsettled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}: {self.text[:40]}"


from chat.rooms.models import ApiToken, Room, RoomMessage  # noqa: E402  (Django finds models here)

__all__ = ["ApiToken", "ChatMessage", "ChatSession", "Room", "RoomMessage", "session_group_name"]
