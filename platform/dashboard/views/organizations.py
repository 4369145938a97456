"""Organizations and their members (staff): the tenancy the Management API enforces."""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import OuterRef
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from dashboard import queries
from orgs.actions import create_organization, remove_membership, set_membership
from orgs.models import Membership, Organization, Role


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=100)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150, label="User name")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEVELOPER)

    def clean_username(self):
        user = get_user_model().objects.filter(username=self.cleaned_data["username"]).first()
        if user is None:
            raise ValidationError("No user with that name.")
        return user


@require_http_methods(["GET", "POST"])
def organizations(request):
    form = OrganizationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            org = create_organization(name=form.cleaned_data["name"], actor=request.user)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            return redirect("dashboard:organization", slug=org.slug)
    orgs = list(
        Organization.objects.annotate(
            member_count=queries.count_of(Membership.objects.filter(organization=OuterRef("pk")))
        )
    )
    projects = queries.live_project_counts("organization", [org.pk for org in orgs])
    for org in orgs:
        org.project_count = projects[org.pk]
    return render(request, "dashboard/organizations.html", {"organizations": orgs, "form": form})


@require_http_methods(["GET", "POST"])
def organization(request, slug):
    org = get_object_or_404(Organization, slug=slug)
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        set_membership(org, form.cleaned_data["username"], form.cleaned_data["role"], actor=request.user)
        return redirect("dashboard:organization", slug=org.slug)
    members = org.memberships.select_related("user").order_by("user__username")
    context = {
        "organization": org,
        "members": members,
        "form": form,
        "project_count": queries.live_project_counts("organization", [org.pk])[org.pk],
    }
    return render(request, "dashboard/organization.html", context)


@require_POST
def remove_member(request, slug, pk):
    membership = get_object_or_404(Membership, pk=pk, organization__slug=slug)
    remove_membership(membership, actor=request.user)
    messages.success(request, f"Removed {membership.user.get_username()} from {membership.organization.name}.")
    return redirect("dashboard:organization", slug=slug)
