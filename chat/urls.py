"""HTTP routes of the chat app."""

from django.urls import path

from chat import views
from chat.rooms import views as room_views

urlpatterns = [
    path("api/rooms", room_views.rooms_endpoint, name="rooms"),
    path("api/rooms/<slug:slug>/messages", room_views.room_messages_endpoint, name="room-messages"),
    path("", views.chat_page, name="chat-page"),
    path("rooms/", views.rooms_page, name="rooms-page"),
    path("api/chat/assistant", views.assistant_detail, name="chat-assistant"),
    path("api/chat/sessions", views.session_create, name="chat-session-create"),
    path("api/chat/sessions/<str:token>", views.session_detail, name="chat-session-detail"),
    path(
        "api/chat/sessions/<str:token>/refresh",
        views.session_refresh,
        name="chat-session-refresh",
    ),
]
