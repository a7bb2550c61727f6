"""WebSocket routes of every app. Browser-facing sockets check the Origin header."""

from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

from chat.routing import websocket_urlpatterns as chat_routes

browser_sockets = AllowedHostsOriginValidator(URLRouter(chat_routes))

websocket_application = browser_sockets
