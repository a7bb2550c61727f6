"""Project URLs: the admin, the apps' pages and JSON APIs."""

from django.contrib import admin
from django.urls import include, path, re_path

from chatsite.api import api_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("chat.urls")),
    path("", include("sensors.urls")),
    re_path(r"^api/", api_not_found),
]

handler400 = "chatsite.api.bad_request"
handler404 = "chatsite.api.not_found"
handler500 = "chatsite.api.server_error"
