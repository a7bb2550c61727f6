"""What every message the assistant can answer shares: the contract chat/replies.py uses."""

from django.db import models
from django.utils import timezone


class ReplyStatus(models.TextChoices):
    """A reply's life: pending → streaming → done, failed or stopped (a message is done)."""

    PENDING = "pending"
    STREAMING = "streaming"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # a person stopped it; text holds what was generated until then


class AnswerableMessage(models.Model):
    """Text, status, client id and reply-generation bookkeeping, shared by sessions and rooms."""

    Status = ReplyStatus

    text = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=ReplyStatus.choices, default=ReplyStatus.DONE)
    created_at = models.DateTimeField(default=timezone.now)
    # NULL, not "", so messages without a client_id stay out of the unique constraints.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # Reply generation: which attempt owns the row, when to try next, why it failed.
    attempt = models.PositiveIntegerField(default=0)
    # The attempt count when a person last asked to retry: the attempt budget starts here.
    retry_base = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        abstract = True
