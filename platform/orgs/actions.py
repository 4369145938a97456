"""Verbs on organizations, memberships and access tokens: one transaction and one audit row each."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.actions import record
from audit.models import Action
from orgs.models import AccessToken, Membership, Organization, Role, generate_token, token_digest

MAX_TOKEN_DAYS = 3650


def create_organization(*, name: str, owner=None, actor=None, label: str | None = None) -> Organization:
    """A new organization; `owner` (a user) becomes its owner."""
    org = Organization(name=name.strip())
    org.full_clean()
    with transaction.atomic():
        org.save()
        if owner is not None:
            Membership.objects.create(organization=org, user=owner, role=Role.OWNER)
        record(actor, Action.ORGANIZATION_CREATE, detail={"slug": org.slug, "name": org.name}, label=label)
    return org


def set_membership(org: Organization, user, role: str, *, actor=None, label: str | None = None) -> Membership:
    """Add `user` to `org` with `role`, or change the role they have there."""
    role = Role(role)
    with transaction.atomic():
        membership, created = Membership.objects.update_or_create(organization=org, user=user, defaults={"role": role})
        record(
            actor,
            Action.ORGANIZATION_MEMBER_ADD if created else Action.ORGANIZATION_MEMBER_ROLE,
            detail={"organization": org.slug, "user": user.get_username(), "role": role},
            label=label,
        )
    return membership


def remove_membership(membership: Membership, *, actor=None, label: str | None = None) -> None:
    with transaction.atomic():
        deleted, _ = Membership.objects.filter(pk=membership.pk).delete()
        if deleted:
            record(
                actor,
                Action.ORGANIZATION_MEMBER_REMOVE,
                detail={"organization": membership.organization.slug, "user": membership.user.get_username()},
                label=label,
            )


def create_token(user, *, name: str, expires_days: int | None = None, actor=None, label: str | None = None):
    """A new personal access token for `user`. Returns (row, plaintext); the plaintext is never stored."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the token a name."})
    if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise ValidationError({"expires_days": f"Expiry must be 1 to {MAX_TOKEN_DAYS} days."})
    plaintext = generate_token()
    expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
    with transaction.atomic():
        token = AccessToken.objects.create(
            user=user, name=name[:100], digest=token_digest(plaintext), hint=plaintext[:8], expires_at=expires_at
        )
        record(
            actor,
            Action.TOKEN_CREATE,
            detail={"token": token.pk, "user": user.get_username(), "name": token.name, "expires_at": _iso(expires_at)},
            label=label,
        )
    return token, plaintext


def revoke_token(token: AccessToken, *, actor=None, label: str | None = None) -> bool:
    """Revoke now; False when it was revoked already. A revoked token never authenticates again."""
    with transaction.atomic():
        revoked = AccessToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if revoked:
            record(
                actor,
                Action.TOKEN_REVOKE,
                detail={"token": token.pk, "user": token.user.get_username(), "name": token.name},
                label=label,
            )
    return bool(revoked)


def _iso(value):
    return value.isoformat() if value else None
