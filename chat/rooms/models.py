"""Rooms, their messages, and the API tokens that post into them from outside."""

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from chat.message_base import AnswerableMessage

ASSISTANT_NAME = "assistant"


def room_group_name(slug: str) -> str:
    """The channel-layer group of every socket in one room."""
    return f"chat.room.{slug}"


class Room(models.Model):
    """A group room, or with capacity 2 a private conversation."""

    slug = models.CharField(
        max_length=50,
        unique=True,
        validators=[
            RegexValidator(r"^[a-z0-9][a-z0-9_-]{0,49}$", "lowercase letters, digits, - and _")
        ],
    )
    title = models.CharField(max_length=100)
    capacity = models.PositiveIntegerField(default=50, validators=[MinValueValidator(2)])
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title or self.slug

    @property
    def group_name(self) -> str:
        return room_group_name(self.slug)

    @property
    def is_private(self) -> bool:
        """A room of two."""
        return self.capacity == 2


class RoomMessage(AnswerableMessage):
    """A message in a room; the assistant's carry the message they answer and a status."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.CharField(max_length=80)
    reply_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replies"
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["room", "author", "client_id"],
                condition=Q(client_id__isnull=False),
                name="room_message_unique_client_id",
            )
        ]
        indexes = [
            models.Index(fields=["room", "id"], name="room_message_room_id"),
            # The worker's supervisor looks for unsettled replies every few seconds.
            models.Index(
                fields=["id"],
                condition=Q(status__in=["pending", "streaming"]),
                name="room_message_unsettled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.author}: {self.text[:40]}"


class ApiToken(models.Model):
    """A credential for integrations that post into rooms; only its hash is stored."""

    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}…)"
