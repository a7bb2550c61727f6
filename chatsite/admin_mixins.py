"""Admin behaviour shared by the apps' ModelAdmins."""

import logging
from typing import Any

import redis
from django.contrib import messages
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)


class ReadOnlyAdminMixin:
    """Rows written only by the system: they can be viewed (and deleted), not added or edited."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LiveStateAdminMixin:
    """A change list whose rows get live state from Redis, in one round trip per page.

    Subclasses name `live_attribute` and implement `live_state(slugs)`; each shown object
    gets `obj.<live_attribute>` (None when Redis is unavailable, with a warning shown).
    """

    live_attribute = "_live"
    live_unavailable = "Redis is unavailable: live state unknown."

    def live_state(self, slugs: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """The list, with the shown rows' live state read in one Redis round trip."""
        response = super().changelist_view(request, extra_context)  # type: ignore[misc]
        context = getattr(response, "context_data", None) or {}
        if "cl" in context:
            objects = list(context["cl"].result_list)  # the very objects the rows show
            try:
                states = self.live_state([obj.slug for obj in objects])
            except redis.RedisError:
                logger.warning("Redis unavailable: live state not shown", exc_info=True)
                self.message_user(  # type: ignore[attr-defined]
                    request, self.live_unavailable, messages.WARNING
                )
                states = {}
            for obj in objects:
                setattr(obj, self.live_attribute, states.get(obj.slug))
        return response
