"""/v1/: the Management API. Its routes are exempt from the dashboard's login and staff
middleware: they authenticate by bearer token alone and answer 401 JSON to anyone else.
Paths no endpoint serves answer JSON too: 401 without a valid token, else 404."""

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.urls import URLPattern, URLResolver, path, re_path
from django.views.decorators.csrf import csrf_exempt

from api.auth import TokenAuth
from api.errors import ApiError
from api.main import api


def _open_to_tokens(patterns):
    kept = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _open_to_tokens(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            if str(pattern.pattern) == "":
                # ninja's index (named, for the OpenAPI document's prefix) serves nothing here.
                pattern = path("", unknown_route, name=pattern.name)
            login_not_required(pattern.callback)
        kept.append(pattern)
    return kept


@login_not_required
@csrf_exempt
def unknown_route(request):
    try:
        token = TokenAuth()(request)
    except ApiError as error:  # over the rate limit
        response = JsonResponse({"message": error.message}, status=error.status)
        for name, value in error.headers.items():
            response[name] = value
        return response
    if token is None:
        return JsonResponse({"message": "Unauthorized"}, status=401)
    return JsonResponse({"message": f"No route for {request.method} {request.path}"}, status=404)


_patterns, _app_name, _namespace = api.urls
urlpatterns = [
    path("v1/", (_open_to_tokens(_patterns), _app_name, _namespace)),
    re_path(r"^v1(?:/.*)?$", unknown_route),
]
