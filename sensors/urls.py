"""HTTP routes of the sensors app."""

from django.urls import path

from sensors import views

urlpatterns = [
    path("api/sensors", views.sensors_index, name="sensors-index"),
    path("api/sensors/<slug:slug>/readings", views.readings_endpoint, name="sensors-readings"),
]
