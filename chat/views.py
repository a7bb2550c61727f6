"""HTTP JSON API of the assistant chat (and the page that uses it)."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from chat.providers import offline_notice, provider_describe
from chat.rooms.models import ASSISTANT_NAME
from chat.selectors import chat_messages_list, chat_session_get_active
from chat.serializers import session_data
from chat.services import chat_session_create, chat_session_refresh
from chatsite.api import client_ip, json_api
from chatsite.ratelimit import rate_limit_check


@json_api(methods=["POST"])
def session_create(request: HttpRequest, data: dict[str, Any]) -> JsonResponse:
    """POST /api/chat/sessions {"name"}: 201 with the new session and its token."""
    rate_limit_check(
        scope="chat-session-create", subject=client_ip(request),
        limit=settings.CHAT_SESSION_CREATE_RATE_LIMIT, window=60,
    )  # fmt: skip
    session, token = chat_session_create(name=data.get("name"))
    return JsonResponse(session_data(session, [], token=token), status=201)


@json_api(methods=["GET"])
def session_detail(request: HttpRequest, data: dict[str, Any], token: str) -> JsonResponse:
    """GET /api/chat/sessions/<token>: the session with its whole history."""
    session = chat_session_get_active(token=token)
    messages = chat_messages_list(session_id=session.pk)
    return JsonResponse(session_data(session, messages, token=token))


@json_api(methods=["POST"])
def session_refresh(request: HttpRequest, data: dict[str, Any], token: str) -> JsonResponse:
    """POST /api/chat/sessions/<token>/refresh: extend the expiry, return the session."""
    session = chat_session_refresh(session=chat_session_get_active(token=token))
    messages = chat_messages_list(session_id=session.pk)
    return JsonResponse(session_data(session, messages, token=token))


@json_api(methods=["GET"])
def assistant_detail(request: HttpRequest, data: dict[str, Any]) -> JsonResponse:
    """GET /api/chat/assistant: which provider, model and URL answer the assistant."""
    return JsonResponse(provider_describe())


# The page may load only its own scripts and styles and talk only to its own origin, so
# even text that slipped past the sanitiser could not run script or fetch anything.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def page_config() -> dict[str, Any]:
    """The settings the chat page needs, handed to its script as JSON."""
    return {
        "sessionsUrl": reverse("chat-session-create"),
        "socketPath": "/ws/chat/",
        "maxMessageChars": settings.CHAT_MAX_MESSAGE_CHARS,
        "maxNameChars": settings.CHAT_NAME_MAX_CHARS,
        "sessionTtlSeconds": settings.CHAT_SESSION_TTL,
        "offlineNotice": offline_notice(),
    }


@require_safe
def chat_page(request: HttpRequest) -> HttpResponse:
    """GET /: the chat page (all behaviour is in static/chat/app.js)."""
    response = render(request, "chat/index.html", {"config": page_config()})
    response["Content-Security-Policy"] = PAGE_CSP
    return response


def rooms_page_config() -> dict[str, Any]:
    """The settings the rooms page needs, handed to its script as JSON."""
    # Presence times out after ROOM_PRESENCE_TIMEOUT without frames: ping well within it.
    ping_ms = int(min(20.0, settings.ROOM_PRESENCE_TIMEOUT / 3) * 1000)
    return {
        "roomsUrl": reverse("rooms"),
        "socketPath": "/ws/rooms/",
        "maxMessageChars": settings.CHAT_MAX_MESSAGE_CHARS,
        "maxNameChars": settings.CHAT_NAME_MAX_CHARS,
        "assistantName": ASSISTANT_NAME,
        "pingEveryMs": max(1000, ping_ms),
        "offlineNotice": offline_notice(),
    }


@require_safe
def rooms_page(request: HttpRequest) -> HttpResponse:
    """GET /rooms/: the room list and the rooms the person has open (static/chat/rooms.js)."""
    response = render(request, "chat/rooms.html", {"config": rooms_page_config()})
    response["Content-Security-Policy"] = PAGE_CSP
    return response
