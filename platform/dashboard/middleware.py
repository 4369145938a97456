from django.core.exceptions import PermissionDenied


class StaffOnlyMiddleware:
    """Berth is for platform staff: a signed-in user who is not staff sees 403 everywhere.

    Runs after LoginRequiredMiddleware, so anonymous users have already been sent to the
    login page; views marked login_not_required (login, logout) stay open.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not getattr(view_func, "login_required", True):
            return None
        if request.user.is_authenticated and not request.user.is_staff:
            raise PermissionDenied("Berth is for platform staff.")
        return None
