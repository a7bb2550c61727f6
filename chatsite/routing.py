"""WebSocket routes of every app.

Browser sockets check the Origin header against ALLOWED_HOSTS and carry the logged-in
user. Device sockets authenticate by key and accept connections without an Origin
(devices send none); they use no cookie, so a foreign page gains nothing by opening one.
"""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import re_path

from chat.routing import websocket_urlpatterns as chat_routes
from chatsite.sockets import ServerSendMiddleware, UnknownPathConsumer
from sensors.routing import device_urlpatterns as sensor_device_routes
from sensors.routing import websocket_urlpatterns as sensor_routes

browser_sockets = AllowedHostsOriginValidator(
    AuthMiddlewareStack(
        URLRouter([*chat_routes, *sensor_routes, re_path(r"", UnknownPathConsumer.as_asgi())])
    )
)

websocket_application = ServerSendMiddleware(
    URLRouter([*sensor_device_routes, re_path(r"", browser_sockets)])
)
