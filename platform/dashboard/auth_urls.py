"""Sign-in and sign-out, at the site's root (no namespace: settings name them `login`, `logout`)."""

from django.urls import path

from dashboard.views import auth

urlpatterns = [
    path("login/", auth.sign_in, name="login"),
    path("logout/", auth.sign_out, name="logout"),
]
