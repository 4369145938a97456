"""/v1/: the Management API. Its routes are exempt from the dashboard's login and staff
middleware: they authenticate by bearer token alone and answer 401 JSON to anyone else.
Paths no endpoint serves answer JSON too: 401 without a valid token, else 404; so does a
method a path does not serve: 401 without a valid token, else 405 `{"message"}`. Only the OpenAPI
document answers anyone (tests/dashboard/test_access_routes.py lists it)."""

import functools

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
            else:
                pattern = URLPattern(pattern.pattern, _token_before_405(pattern.callback), None, pattern.name)
            login_not_required(pattern.callback)
        kept.append(pattern)
    return kept


def _token_before_405(view):
    """ninja answers a method the path does not serve with 405 (Django's, an HTML body) before
    any authentication; without a valid token that is 401 like everything else under /v1/,
    with one a JSON 405 that keeps the Allow header."""

    @functools.wraps(view)
    def checked(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if response.status_code == 405:
            refused = _refusal(request)
            if refused is not None:
                return refused
            allowed = response.get("Allow", "")
            answer = JsonResponse(
                {"message": f"Method {request.method} not allowed on {request.path}; allowed: {allowed}"}, status=405
            )
            answer["Allow"] = allowed
            return answer
        return response

    return checked


def _refusal(request) -> JsonResponse | None:
    """The answer to a request without a valid token (401, or 429 over the rate limit); None with one."""
    try:
        token = TokenAuth()(request)
    except ApiError as error:  # over the rate limit
        response = JsonResponse({"message": error.message}, status=error.status)
        for name, value in error.headers.items():
            response[name] = value
        return response
    if token is None:
        return JsonResponse({"message": "Unauthorized"}, status=401)
    return None


@login_not_required
@csrf_exempt
def unknown_route(request):
    return _refusal(request) or JsonResponse({"message": f"No route for {request.method} {request.path}"}, status=404)


_patterns, _app_name, _namespace = api.urls
urlpatterns = [
    path("v1/", (_open_to_tokens(_patterns), _app_name, _namespace)),
    re_path(r"^v1(?:/.*)?$", unknown_route),
]
