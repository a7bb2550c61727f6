"""HTTP JSON API of the chat rooms."""

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware

from chat.errors import ChatError
from chat.rooms.selectors import api_token_authenticate, room_get, rooms_list
from chat.rooms.serializers import room_data, room_message_data
from chat.rooms.services import room_create, room_message_post
from chatsite.api import json_api


def _csrf_failure(request: HttpRequest) -> bool:
    """Whether a cookie-authenticated request fails Django's CSRF check."""
    middleware = CsrfViewMiddleware(lambda r: None)  # type: ignore[arg-type, return-value]
    return middleware.process_view(request, None, (), {}) is not None  # type: ignore[arg-type]


def _require_user(request: HttpRequest, *, staff: bool) -> None:
    """A logged-in (staff) session with a valid CSRF token, or ChatError 401/403."""
    if not request.user.is_authenticated:
        raise ChatError("unauthorized", "Log in, or send an API token.", status=401)
    if staff and not request.user.is_staff:
        raise ChatError("forbidden", "Only staff may post into rooms from outside.", status=403)
    if _csrf_failure(request):
        raise ChatError("csrf_failed", "The CSRF token is missing or wrong.", status=403)


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@json_api(methods=["GET", "POST"])
def rooms_endpoint(request: HttpRequest, data: Any) -> JsonResponse:
    """GET /api/rooms: rooms with online counts. POST: create one (logged-in users)."""
    if request.method == "GET":
        return JsonResponse({"rooms": rooms_list()})
    _require_user(request, staff=False)
    room = room_create(
        slug=data.get("slug"), title=data.get("title"), capacity=data.get("capacity", 50)
    )
    return JsonResponse(room_data(room, online=0), status=201)


@json_api(methods=["POST"])
def room_messages_endpoint(request: HttpRequest, data: Any, slug: str) -> JsonResponse:
    """POST /api/rooms/<slug>/messages {"text", "author"}: post (API token or staff session)."""
    token = _bearer(request)
    if token is not None:
        api_token_authenticate(token=token)
    else:
        _require_user(request, staff=True)
    message = room_message_post(
        room=room_get(slug=slug), author=data.get("author"), text=data.get("text")
    )
    return JsonResponse({"message": room_message_data(message)}, status=201)
