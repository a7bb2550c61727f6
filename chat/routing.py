"""WebSocket routes of the chat app."""

from django.urls import path

from chat.consumers import ChatConsumer
from chat.rooms.consumers import RoomConsumer

websocket_urlpatterns = [
    path("ws/chat/<str:token>", ChatConsumer.as_asgi()),
    path("ws/rooms/<slug:slug>", RoomConsumer.as_asgi()),
]
