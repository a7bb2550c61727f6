"""WebSocket routes of the sensors app: devices publish, browsers watch."""

from django.urls import path

from sensors.consumers import PublishConsumer, SensorsOverviewConsumer, SensorWatchConsumer

device_urlpatterns = [
    path("ws/sensors/<slug:slug>/publish", PublishConsumer.as_asgi()),
]

websocket_urlpatterns = [
    path("ws/sensors", SensorsOverviewConsumer.as_asgi()),
    path("ws/sensors/<slug:slug>", SensorWatchConsumer.as_asgi()),
]
