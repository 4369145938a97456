"""/v1/: the Management API. Its routes are exempt from the dashboard's login and staff
middleware: they authenticate by bearer token alone and answer 401 JSON to anyone else."""

from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, URLResolver, path

from api.main import api


def _open_to_tokens(patterns):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _open_to_tokens(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            login_not_required(pattern.callback)
    return patterns


_patterns, _app_name, _namespace = api.urls
urlpatterns = [path("v1/", (_open_to_tokens(_patterns), _app_name, _namespace))]
