from urllib.parse import urlsplit

from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.utils.http import url_has_allowed_host_and_scheme


class LoginRequiredOrHtmxRedirectMiddleware(LoginRequiredMiddleware):
    """Django's login requirement, with one change for htmx requests.

    A 302 answering an htmx request is followed inside XMLHttpRequest, so a poll made after
    the session ended would swap the login form into the card it refreshes. htmx requests get
    `HX-Redirect` to the login page instead (the browser then navigates there), with `next`
    pointing at the page the browser shows, not at the partial it polled.
    """

    def handle_no_permission(self, request, view_func):
        if request.headers.get("HX-Request") != "true":
            return super().handle_no_permission(request, view_func)
        current = request.headers.get("HX-Current-URL", "")
        if url_has_allowed_host_and_scheme(current, allowed_hosts={request.get_host()}):
            parts = urlsplit(current)
            current = parts.path + (f"?{parts.query}" if parts.query else "")
        else:
            current = request.get_full_path()
        login = redirect_to_login(current, self.get_login_url(view_func), self.get_redirect_field_name(view_func))
        response = HttpResponse(status=204)
        response["HX-Redirect"] = login.url
        return response


def staff_not_required(view_func):
    """Open a page to every signed-in user, not only staff (their own access tokens)."""
    view_func.staff_required = False
    return view_func


class StaffOnlyMiddleware:
    """Berth is for platform staff: a signed-in user who is not staff sees 403 everywhere.

    Runs after the login requirement, so anonymous users have already been sent to the
    login page; views marked login_not_required (login, logout, the token-authenticated
    Management API) stay open, and views marked staff_not_required are for every signed-in user.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not getattr(view_func, "login_required", True) or not getattr(view_func, "staff_required", True):
            return None
        if request.user.is_authenticated and not request.user.is_staff:
            raise PermissionDenied("Berth is for platform staff.")
        return None
