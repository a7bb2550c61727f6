"""Operators' view of chat sessions and messages (never a whole token: only its prefix)."""

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.text import Truncator

from chat.models import ChatMessage, ChatSession
from chat.serializers import message_data
from chat.services import chat_sessions_expire
from chatsite.admin_mixins import ReadOnlyAdminMixin
from chatsite.credentials import PREFIX_CHARS, credential_hash

SHORT_TEXT_CHARS = 80


class ExpiryFilter(admin.SimpleListFilter):
    """Active sessions, or expired ones."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


class ChatMessageInline(admin.TabularInline):
    """A session's messages, oldest first, read-only."""

    model = ChatMessage
    fk_name = "session"
    fields = ["id", "created_at", "role", "status", "text", "reply_to", "attempt", "error"]
    readonly_fields = fields
    ordering = ["id"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    """Sessions with their activity; expire them or export their transcripts."""

    list_display = [
        "name", "token", "created_at", "last_activity_at", "expires_at", "message_count",
        "expired",
    ]  # fmt: skip
    list_filter = [ExpiryFilter, "created_at", "last_activity_at"]
    search_fields = ["name", "token_prefix"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    fields = ["name", "token", "created_at", "last_activity_at", "expires_at", "message_count"]
    readonly_fields = ["token", "created_at", "last_activity_at", "message_count"]
    inlines = [ChatMessageInline]
    actions = ["expire_now", "export_transcripts"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sessions start from the chat page, which hands the token to its owner

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(_message_count=Count("messages"))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Also find a session by its whole token (matched by hash, never stored)."""
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if len(term) > PREFIX_CHARS:
            results |= queryset.filter(token_hash=credential_hash(term))
        return results, may_have_duplicates

    @admin.display(description="token", ordering="token_prefix")
    def token(self, session: ChatSession) -> str:
        """The token's first characters only."""
        return f"{session.token_prefix}…"

    @admin.display(description="messages", ordering="_message_count")
    def message_count(self, session: ChatSession) -> int:
        """How many messages the session has."""
        if hasattr(session, "_message_count"):
            return session._message_count
        return session.messages.count()

    @admin.display(description="expired", boolean=True, ordering="expires_at")
    def expired(self, session: ChatSession) -> bool:
        """Whether the session has passed its expiry."""
        return session.is_expired()

    @admin.action(description="Expire selected sessions now", permissions=["change"])
    def expire_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        """End the selected sessions: their tokens stop working at once."""
        count = chat_sessions_expire(session_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Expired {count} session(s).", messages.SUCCESS)

    @admin.action(description="Export selected transcripts as JSON")
    def export_transcripts(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        """Download the selected sessions with all their messages, oldest first."""
        sessions = queryset.order_by("created_at").prefetch_related("messages")
        body = json.dumps([transcript(s) for s in sessions], indent=2, ensure_ascii=False)
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="chat-transcripts-{stamp}.json"'
        return response


def transcript(session: ChatSession) -> dict[str, Any]:
    """One session's export: its details (token prefix only) and every message."""
    return {
        "name": session.name,
        "token_prefix": session.token_prefix,
        "created_at": session.created_at.isoformat(),
        "last_activity_at": session.last_activity_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
        "messages": [message_data(m) for m in sorted(session.messages.all(), key=lambda m: m.pk)],
    }


@admin.register(ChatMessage)
class ChatMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every message, read-only; filter by status to find failed replies."""

    list_display = ["id", "session", "role", "status", "created_at", "short_text"]
    list_filter = ["status", "role", "created_at"]
    list_select_related = ["session"]
    search_fields = ["text", "session__name", "session__token_prefix"]
    ordering = ["-id"]
    fields = [
        "session", "role", "status", "created_at", "text", "reply_to", "client_id", "attempt",
        "next_attempt_at", "error",
    ]  # fmt: skip
    readonly_fields = fields

    @admin.display(description="text")
    def short_text(self, message: ChatMessage) -> str:
        """The first characters of the text (or the error of a failed reply)."""
        text = message.text or (f"[{message.error}]" if message.error else "")
        return Truncator(" ".join(text.split())).chars(SHORT_TEXT_CHARS)


import chat.rooms.admin  # noqa: E402, F401
