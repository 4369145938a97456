from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("dashboard.auth_urls")),
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
    path("", include("metrics.urls")),
    path("", include("dashboard.urls")),
]
