"""HTTP routes of the sensors app."""

from django.urls import path
from django.views.generic import RedirectView

from sensors import views

urlpatterns = [
    path("api/sensors", views.sensors_index, name="sensors-index"),
    path("api/sensors/<slug:slug>/readings", views.readings_endpoint, name="sensors-readings"),
    path("sensors/", views.dashboard_page, name="sensors-dashboard"),
    path("sensors", RedirectView.as_view(pattern_name="sensors-dashboard")),
    path("sensors/<slug:slug>/", views.sensor_page, name="sensors-page"),
]
