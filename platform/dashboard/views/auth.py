from django.contrib.auth import views as auth_views
from django.urls import reverse

from dashboard.middleware import staff_not_required


class SignInView(auth_views.LoginView):
    """Django's sign-in page; a user who is not staff lands on their access tokens (the one
    page open to them) rather than on the dashboard, which would answer 403."""

    def get_default_redirect_url(self):
        if not self.request.user.is_staff:
            return reverse("dashboard:tokens")
        return super().get_default_redirect_url()


sign_in = SignInView.as_view()
# Every signed-in user may sign out, staff or not.
sign_out = staff_not_required(auth_views.LogoutView.as_view())
