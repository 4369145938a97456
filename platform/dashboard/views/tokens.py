"""Each signed-in user's own personal access tokens for the Management API (staff or not)."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.middleware import staff_not_required
from orgs.actions import MAX_TOKEN_DAYS, create_token, revoke_token
from orgs.models import AccessToken


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    expires_days = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_TOKEN_DAYS, label="Expires after (days)", help_text="Empty: never"
    )


@staff_not_required
@never_cache
@require_http_methods(["GET", "POST"])
def tokens(request):
    """The list and the create form; a created token is shown in this one reply and never again."""
    form = TokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            _, created = create_token(
                request.user,
                name=form.cleaned_data["name"],
                expires_days=form.cleaned_data["expires_days"],
                actor=request.user,
            )
            form = TokenForm()
        except ValidationError as error:
            form.add_error(None, error)
    context = {"form": form, "created": created, "tokens": AccessToken.objects.filter(user=request.user)}
    return render(request, "dashboard/tokens.html", context)


@staff_not_required
@require_POST
def revoke(request, pk):
    token = get_object_or_404(AccessToken, pk=pk, user=request.user)
    if revoke_token(token, actor=request.user):
        messages.success(request, f"Revoked {token.name}.")
    return redirect("dashboard:tokens")
