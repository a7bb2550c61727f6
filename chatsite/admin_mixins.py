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


class SecretOnAddAdminMixin:
    """Adds go through a service that makes a secret (a key, a token), shown once.

    Subclasses implement `create_with_secret(obj)` -> (saved row, secret) and
    `secret_message(obj, secret)` -> the HTML shown once on the next page. The secret
    lives only on the request between save_model and response_add.
    """

    def create_with_secret(self, obj: Any) -> tuple[Any, str]:
        raise NotImplementedError

    def secret_message(self, obj: Any, secret: str) -> str:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """A new row is made by its service (with its secret); edits save as usual."""
        if change:
            super().save_model(request, obj, form, change)  # type: ignore[misc]
            return
        row, secret = self.create_with_secret(obj)
        for field in type(row)._meta.concrete_fields:  # the form's instance becomes the row
            setattr(obj, field.attname, getattr(row, field.attname))
        obj._state.adding, obj._state.db = False, row._state.db
        request._new_secret = secret  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: Any, *args: Any) -> HttpResponse:
        """The page after the add, with the secret shown this once."""
        response = super().response_add(request, obj, *args)  # type: ignore[misc]
        secret = getattr(request, "_new_secret", None)
        if secret is not None:
            del request._new_secret  # type: ignore[attr-defined]
            self.message_user(  # type: ignore[attr-defined]
                request, self.secret_message(obj, secret), messages.WARNING
            )
        return response
