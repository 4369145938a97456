from django.core.exceptions import PermissionDenied


def staff_not_required(view_func):
    """Open a page to every signed-in user, not only staff (their own access tokens)."""
    view_func.staff_required = False
    return view_func


class StaffOnlyMiddleware:
    """Berth is for platform staff: a signed-in user who is not staff sees 403 everywhere.

    Runs after LoginRequiredMiddleware, so anonymous users have already been sent to the
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
