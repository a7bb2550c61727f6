"""WebSocket routes of every app. Browser-facing sockets check the Origin header."""

from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from chat.routing import websocket_urlpatterns as chat_routes
from chatsite.sockets import UnknownPathConsumer

browser_sockets = AllowedHostsOriginValidator(
    URLRouter([*chat_routes, re_path(r"", UnknownPathConsumer.as_asgi())])
)

websocket_application = browser_sockets
