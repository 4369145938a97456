"""Bearer authentication with personal access tokens, and the per-token rate limit.

Only `Authorization: Bearer sbp_...` authenticates: no session, no CSRF (Django's session
and CSRF middleware never decide anything for /v1/). A token authenticates while it is
neither revoked nor expired and its user is active. `last_used_at` is written at most
once a minute per token, so a busy token costs no write per request.
"""

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from ninja.security import HttpBearer

from api import ratelimit
from api.errors import ApiError
from orgs.models import TOKEN_PATTERN, AccessToken, token_digest

LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        if not TOKEN_PATTERN.fullmatch(token or ""):
            return None
        now = timezone.now()
        found = (
            AccessToken.objects.usable(now)
            .select_related("user")
            .filter(digest=token_digest(token), user__is_active=True)
            .first()
        )
        if found is None:
            return None
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        AccessToken.objects.filter(stale, pk=found.pk).update(last_used_at=now)
        state = ratelimit.hit(found.pk)
        request.rate_limit = state
        if state.exceeded:
            raise ApiError(429, "Too many requests", {**state.headers(), "Retry-After": str(state.retry_after)})
        return found
