"""Operators' view of rooms, their messages and the API tokens that post into them.

Deleting a message here, one at a time or in bulk, goes through room_messages_delete, so
it disappears live from the view of everyone in the room. An API token is shown once, in
a message on the page that follows its creation, and otherwise only by its first
characters.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.text import Truncator

from chat.rooms.models import ApiToken, Room, RoomMessage
from chat.rooms.presence import presence_counts
from chat.rooms.services import api_token_create, room_messages_delete
from chatsite.admin_mixins import (
    LiveStateAdminMixin,
    ReadOnlyAdminMixin,
    SecretOnAddAdminMixin,
)

SHORT_TEXT_CHARS = 80
TOKEN_SHOWN_ONCE = "Copy it now: it is shown only this once and cannot be shown again."


# --- rooms -------------------------------------------------------------------------------


@admin.register(Room)
class RoomAdmin(LiveStateAdminMixin, admin.ModelAdmin):
    """Rooms with how many members are online now and how many messages they hold."""

    live_attribute = "_online"
    live_unavailable = "Redis is unavailable: online counts unknown."

    def live_state(self, slugs: list[str]) -> dict[str, Any]:
        return presence_counts(slugs=slugs)

    list_display = ["slug", "title", "capacity", "private", "online", "message_count", "created_at"]
    search_fields = ["slug", "title"]
    ordering = ["slug"]
    readonly_fields = ["created_at"]

    def get_fields(self, request: HttpRequest, obj: Room | None = None) -> list[str]:
        if obj is None:
            return ["slug", "title", "capacity"]
        return ["slug", "title", "capacity", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Room | None = None) -> list[str]:
        if obj is None:
            return []
        # The slug names the room's socket path, group and presence keys.
        return ["slug", *self.readonly_fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_message_count=Count("messages"))

    @admin.display(description="private", boolean=True, ordering="capacity")
    def private(self, room: Room) -> bool:
        """A room of two."""
        return room.is_private

    @admin.display(description="online")
    def online(self, room: Room) -> int | str:
        """Members online now (unknown when the count was not read)."""
        count = getattr(room, "_online", None)
        return "?" if count is None else count

    @admin.display(description="messages", ordering="_message_count")
    def message_count(self, room: Room) -> int:
        """How many messages the room has."""
        if hasattr(room, "_message_count"):
            return room._message_count
        return room.messages.count()


# --- messages ----------------------------------------------------------------------------


@admin.register(RoomMessage)
class RoomMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every room message, read-only; deleting removes it live from members' views."""

    list_display = ["id", "room", "author", "status", "created_at", "short_text"]
    list_filter = ["room", "status"]
    list_select_related = ["room"]
    search_fields = ["text", "author", "room__slug", "room__title"]
    ordering = ["-id"]
    fields = [
        "room", "author", "status", "created_at", "text", "reply_to", "client_id", "attempt",
        "next_attempt_at", "error",
    ]  # fmt: skip
    readonly_fields = fields

    def delete_model(self, request: HttpRequest, obj: RoomMessage) -> None:
        """Delete one message and tell the room."""
        room_messages_delete(message_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """The bulk "delete selected" action: delete them and tell their rooms."""
        room_messages_delete(message_ids=list(queryset.values_list("pk", flat=True)))

    @admin.display(description="text")
    def short_text(self, message: RoomMessage) -> str:
        """The first characters of the text (or the error of a failed reply)."""
        text = message.text or (f"[{message.error}]" if message.error else "")
        return Truncator(" ".join(text.split())).chars(SHORT_TEXT_CHARS)


# --- API tokens --------------------------------------------------------------------------


class ApiTokenAddForm(forms.ModelForm):
    """A new token needs only a name; the token itself is made by api_token_create."""

    class Meta:
        model = ApiToken
        fields = ["name"]


@admin.register(ApiToken)
class ApiTokenAdmin(SecretOnAddAdminMixin, admin.ModelAdmin):
    """Tokens for integrations that post into rooms; create, rename or deactivate them."""

    add_form = ApiTokenAddForm
    list_display = ["name", "token", "active", "created_at", "last_used_at"]
    list_filter = ["active"]
    search_fields = ["name", "token_prefix"]
    ordering = ["-created_at"]
    readonly_fields = ["token", "created_at", "last_used_at"]
    actions = ["deactivate"]

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        if obj is None:
            return ["name"]
        return ["name", "active", "token", "created_at", "last_used_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def create_with_secret(self, obj: ApiToken) -> tuple[ApiToken, str]:
        return api_token_create(name=obj.name)

    def secret_message(self, obj: ApiToken, secret: str) -> str:
        return format_html(
            "The API token “{}” is <code>{}</code>. {}", obj.name, secret, TOKEN_SHOWN_ONCE
        )

    @admin.display(description="token", ordering="token_prefix")
    def token(self, token: ApiToken) -> str:
        """The token's first characters only."""
        return f"{token.token_prefix}…"

    @admin.action(description="Deactivate selected tokens", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Stop accepting the selected tokens at once."""
        tokens = list(queryset.filter(active=True))
        ApiToken.objects.filter(pk__in=[t.pk for t in tokens]).update(active=False)
        for token in tokens:
            self.log_change(request, token, "Deactivated.")
        self.message_user(request, f"Deactivated {len(tokens)} token(s).", messages.SUCCESS)
