"""Access rules for every route, generated from the URL configuration.

The routes are found by walking the resolver (the admin's included), so a route added
tomorrow is covered by these tests without anyone writing one for it:

- anonymous requests, plain or htmx (by HX-Redirect), GET or POST, go to the login page (API routes under
  `/v1/` answer 401 instead);
- a signed-in user who is not staff gets 403, htmx requests too (API routes: 401, as the
  session authenticates nothing there);
- every route refuses a POST that carries no valid CSRF token, even from staff.

A route open to anonymous users, or to signed-in users who are not staff, must be listed
in OPEN with the reason; nothing else may be.
"""

import re

import pytest
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.contenttypes.models import ContentType
from django.http import HttpResponse
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, include, path, resolve, reverse
from django.utils import timezone
from django.utils.regex_helper import normalize

from operations.models import Kind, Operation, Rollout, RolloutProject
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db

ANYONE = "anyone"  # anonymous users too
SIGNED_IN = "signed in"  # every signed-in user, staff or not

# The exceptions, by full URL name: who may reach the route besides staff, and why. Every
# view marked login_not_required (outside the API, whose routes authenticate by token) or
# staff_not_required must be here and nothing else may be (test_open_routes_are_listed...).
# Static files are no route: WhiteNoise serves them before URL resolution.
OPEN = {
    "login": (ANYONE, "the sign-in page itself"),
    "logout": (SIGNED_IN, "signing out, for every signed-in user, staff or not"),
    "admin:login": (ANYONE, "the admin's sign-in page; the admin's other views send anonymous users there"),
    "api:openapi-json": (ANYONE, "the Management API's OpenAPI document: the published API's shape, no data"),
    "metrics": (ANYONE, "Prometheus's scrape: no session, its own bearer token (BERTH_METRICS_TOKEN; tests/metrics)"),
    "dashboard:tokens": (SIGNED_IN, "each user's own access tokens for the Management API (staff or not)"),
    "dashboard:revoke_token": (SIGNED_IN, "revoking one's own access token; another user's is 404"),
}

# API routes are for programs: no login page, a plain 401. The segment `v1` (the API's
# catch-all for unknown paths, `^v1(?:/.*)?$`, included).
API_SEGMENT = re.compile(r"v1(?![\w-])")

HTMX = {"HTTP_HX_REQUEST": "true"}


def walk(patterns=None, prefix=(), namespace=""):
    """(pattern parts from the root, full URL name or None, view) for every route."""
    if patterns is None:
        patterns = get_resolver().url_patterns
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from walk(entry.url_patterns, (*prefix, entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}{entry.name}" if entry.name else None
            yield (*prefix, entry.pattern), name, entry.callback


ROUTES = list(walk())


def route_id(parts) -> str:
    return "".join(str(part) for part in parts) or "/"


ROUTE_PARAMS = [pytest.param(parts, name, view, id=route_id(parts)) for parts, name, view in ROUTES]


def fill(pattern, values: dict) -> str:
    """One concrete piece of URL for a pattern, its parameters taken from `values`."""
    route = getattr(pattern, "_route", None)
    if route is not None:

        def value(match):
            name = match.group(2)
            if name not in values:
                raise AssertionError(f"add a sample value for URL parameter {name!r} to sample_values()")
            return str(values[name])

        return re.sub(r"<(?:(\w+):)?(\w+)>", value, route)
    ((template, names),) = normalize(pattern.regex.pattern)[:1]
    missing = [n for n in names if n not in values]
    assert not missing, f"add sample values for URL parameters {missing} to sample_values()"
    return template % {n: values[n] for n in names}


@pytest.fixture
def sample_values(django_user_model):
    """Plausible values for every URL parameter a route takes: real rows, so views would find them."""
    host = make_host()
    project = make_project(host=host)
    operation = Operation.objects.create(project=project, kind=Kind.START, deadline=timezone.now())
    user = django_user_model.objects.create_user("someone", password="someone-password")
    rollout = Rollout.objects.create(template=project.template, target=project.template_version)
    RolloutProject.objects.create(
        rollout=rollout,
        project=project,
        position=0,
        wave=0,
        from_version=project.template_version,
        target_version=project.template_version,
    )
    return {
        "rollout_id": rollout.pk,
        "ref": project.ref,
        "pk": operation.pk,
        "name": project.template,
        "object_id": project.pk,
        "id": user.pk,
        "slug": project.organization.slug,
        "content_type_id": ContentType.objects.get_for_model(project).pk,
        "app_label": "projects",
        "url": "no-such-admin-page/",
    }


def concrete(parts, view, values) -> str:
    path = "/" + "".join(fill(part, values) for part in parts)
    # The filled path must lead to this very route, or the test would check another one.
    # (ninja names one route per operation; operations on one path share the first route's
    # view, which serves all their methods.)
    match = resolve(path)
    assert match.func is view or match.route == route_id(parts), f"{path} does not resolve to its route"
    return path


def login_pages() -> set[str]:
    """The sign-in pages: the site's, and the admin's (where some admin views send anonymous users)."""
    return {reverse(settings.LOGIN_URL), reverse("admin:login")}


def open_to(name) -> str | None:
    return OPEN[name][0] if name in OPEN else None


def is_api(parts) -> bool:
    return bool(API_SEGMENT.match(route_id(parts).lstrip("^")))


def test_the_walk_finds_the_dashboard_and_admin_routes():
    names = {name for _, name, _ in ROUTES}
    for expected in ["dashboard:project_action", "dashboard:reveal_secrets", "dashboard:host_agent", "admin:index"]:
        assert expected in names
    assert "admin:projects_project_change" in names
    assert len(ROUTES) > 40


def test_open_routes_are_listed_with_a_reason_and_are_the_only_open_ones():
    # API routes are all login_not_required: they authenticate each request themselves (they
    # answer 401, checked below), so OPEN lists the API routes that answer anyone.
    anyone = {name for parts, name, view in ROUTES if not getattr(view, "login_required", True) and not is_api(parts)}
    signed_in = {name for _, name, view in ROUTES if not getattr(view, "staff_required", True)}
    listed = {level: {name for name, (at, _) in OPEN.items() if at == level} for level in (ANYONE, SIGNED_IN)}
    api_listed = {name for parts, name, _ in ROUTES if is_api(parts) and name in listed[ANYONE]}
    assert anyone == listed[ANYONE] - api_listed, "a route open to anonymous users must be listed in OPEN, with why"
    assert signed_in == listed[SIGNED_IN], "a route open to non-staff users must be listed in OPEN, with why"
    assert {name for _, name, _ in ROUTES} >= set(OPEN), "OPEN names a route that does not exist"


def test_the_api_routes_are_found_and_all_answer_401_but_the_listed_ones():
    api = [name for parts, name, _ in ROUTES if is_api(parts)]
    assert "api:list_projects" in api and "api:run_query" in api
    assert None in api  # the catch-all for paths no endpoint serves
    assert [name for name in api if open_to(name)] == ["api:openapi-json"]


def assert_anonymous_refused(parts, path) -> None:
    client = Client()
    for method in ("get", "post"):
        for headers in ({}, HTMX):
            response = getattr(client, method)(path, **headers)
            what = f"anonymous {method.upper()} {path} {'(htmx)' if headers else ''}"
            if is_api(parts):
                assert response.status_code == 401, f"{what}: {response.status_code}"
                continue
            if headers and "HX-Redirect" in response:
                # An htmx request is sent on with HX-Redirect: a 302 would swap the login form in.
                assert response.status_code == 204, f"{what}: {response.status_code}"
                target = response["HX-Redirect"]
            else:
                assert response.status_code == 302, f"{what}: {response.status_code}"
                target = response.url
            assert target.split("?")[0] in login_pages(), f"{what} went to {target}"
            assert f"next={path}" in target.replace("%2F", "/"), target


def assert_non_staff_refused(parts, path, user) -> None:
    client = Client()
    client.force_login(user)
    refusals = (401, 403) if is_api(parts) else (403,)
    for method in ("get", "post"):
        for headers in ({}, HTMX):
            response = getattr(client, method)(path, **headers)
            assert response.status_code in refusals, (
                f"non-staff {method.upper()} {path} {headers}: {response.status_code}"
            )


def assert_post_without_csrf_token_refused(parts, path, user, values) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    # An API route authenticates by token, not session: it refuses the session's POST with 401.
    refused = (401, 403) if is_api(parts) else (403,)
    no_token = client.post(path, {"action": "stop", "refs": [values.get("ref", "")]})
    assert no_token.status_code in refused, f"POST {path} without a token: {no_token.status_code}"
    assert no_token.status_code == 401 or b"CSRF" in no_token.content, f"POST {path} refused, not for CSRF"
    # htmx sends the token in a header; a CSRF cookie does not excuse a header that does not match it.
    client.cookies[settings.CSRF_COOKIE_NAME] = _get_new_csrf_string()
    wrong = client.post(path, {"action": "stop"}, HTTP_X_CSRFTOKEN=_get_new_csrf_string(), **HTMX)
    assert wrong.status_code in refused, f"htmx POST {path} with a wrong token: {wrong.status_code}"
    assert wrong.status_code == 401 or b"CSRF" in wrong.content, f"htmx POST {path} refused, not for CSRF"


def assert_non_staff_admitted(path, user) -> None:
    client = Client()
    client.force_login(user)
    for method in ("get", "post"):
        for headers in ({}, HTMX):
            response = getattr(client, method)(path, **headers)
            assert response.status_code != 403, f"non-staff {method.upper()} {path} {headers}: 403"


@pytest.mark.parametrize(("parts", "name", "view"), ROUTE_PARAMS)
def test_anonymous_requests_go_to_the_login_page(parts, name, view, sample_values):
    if open_to(name) == ANYONE:
        pytest.skip(f"open to anyone: {OPEN[name][1]}")
    assert_anonymous_refused(parts, concrete(parts, view, sample_values))


@pytest.mark.parametrize(("parts", "name", "view"), ROUTE_PARAMS)
def test_signed_in_users_who_are_not_staff_get_403(parts, name, view, sample_values, django_user_model):
    if open_to(name) == ANYONE:
        pytest.skip(f"open to anyone: {OPEN[name][1]}")
    visitor = django_user_model.objects.create_user("visitor", password="visitor-password")
    path = concrete(parts, view, sample_values)
    if open_to(name) == SIGNED_IN:
        assert_non_staff_admitted(path, visitor)
        return
    assert_non_staff_refused(parts, path, visitor)


@pytest.mark.parametrize(("parts", "name", "view"), ROUTE_PARAMS)
def test_every_route_refuses_a_post_without_a_valid_csrf_token(parts, name, view, sample_values, superuser):
    assert_post_without_csrf_token_refused(parts, concrete(parts, view, sample_values), superuser, sample_values)


# --- the checks themselves, on a URL configuration with a future API -----------------------


def _api_with_token_auth(request):
    return HttpResponse("token required", status=401)


def _api_like_a_page(request):
    return HttpResponse("{}")


urlpatterns = [
    path("v1/projects/", login_not_required(_api_with_token_auth)),
    path("v1/hosts/", _api_like_a_page),
    path("", include("berth.urls")),
]


def test_a_future_api_route_must_answer_401_to_anonymous_not_send_it_to_a_login_page(settings):
    settings.ROOT_URLCONF = __name__
    routes = {route_id(parts): (parts, view) for parts, _, view in walk(get_resolver().url_patterns)}
    parts, view = routes["v1/projects/"]
    assert is_api(parts)
    assert_anonymous_refused(parts, concrete(parts, view, {}))
    parts, view = routes["v1/hosts/"]
    with pytest.raises(AssertionError, match="anonymous GET /v1/hosts/ : 302"):
        assert_anonymous_refused(parts, concrete(parts, view, {}))


def test_an_htmx_poll_after_the_session_ended_sends_the_browser_to_the_login_page():
    # A 302 would be followed inside the XMLHttpRequest and swap the login form into the card.
    response = Client().get(
        reverse("dashboard:project_statuses"), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/?q=x"
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"{reverse(settings.LOGIN_URL)}?next=/%3Fq%3Dx"


def test_an_htmx_redirect_never_points_next_off_site():
    response = Client().get(
        reverse("dashboard:project_statuses"), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="https://evil.example/"
    )
    assert response["HX-Redirect"] == f"{reverse(settings.LOGIN_URL)}?next=/projects/live/"
