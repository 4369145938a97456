"""Tenancy: organizations, who belongs to them with which role, and personal access tokens.

Invariants:
- Every project belongs to exactly one organization (projects.Project.organization).
- A token is stored only as its sha256 digest; the plaintext exists once, when created.
  sha256 without salt or stretching is enough here because a token is 160 random bits
  from `secrets`: nothing about it can be guessed or looked up in a dictionary, and the
  digest must be indexable so a request finds its token with one unique-index lookup.
"""

import hashlib
import re
import secrets
import string

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{2,39}$"
DEFAULT_ORGANIZATION_SLUG = "default"
# The Supabase CLI refuses any other shape of access token.
TOKEN_PATTERN = re.compile(r"^sbp_[0-9a-f]{40}$")


def new_slug() -> str:
    """Supabase-style organization slugs: 20 random lowercase letters, which say nothing of the name."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))


class Role(models.TextChoices):
    OWNER = "owner"
    DEVELOPER = "developer"
    READ_ONLY = "read_only"


class OrganizationQuerySet(models.QuerySet):
    def of_user(self, user):
        return self.filter(memberships__user=user)


class Organization(models.Model):
    slug = models.CharField(
        max_length=40,
        unique=True,
        default=new_slug,
        validators=[RegexValidator(SLUG_PATTERN, "3-40 lowercase letters, digits and dashes.")],
    )
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrganizationQuerySet.as_manager()

    class Meta:
        ordering = ["name", "slug"]
        constraints = [models.CheckConstraint(condition=Q(slug__regex=SLUG_PATTERN), name="organization_slug_shape")]

    def __str__(self):
        return f"{self.name} ({self.slug})"


def default_organization_id() -> int:
    """The organization projects land in when none is named (staff pages, commands, old rows)."""
    org, _ = Organization.objects.get_or_create(slug=DEFAULT_ORGANIZATION_SLUG, defaults={"name": "Default"})
    return org.pk


class Membership(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role, default=Role.DEVELOPER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "user"]
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="one_membership_per_user")]

    def __str__(self):
        return f"{self.user} in {self.organization.slug} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role != Role.READ_ONLY


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> str:
    return "sbp_" + secrets.token_hex(20)


class AccessTokenQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), revoked_at__isnull=True)


class AccessToken(models.Model):
    """A personal access token for the Management API (`Authorization: Bearer sbp_...`)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so people can tell their tokens apart; 16 of 160 bits, nothing to guess with.
    hint = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"
