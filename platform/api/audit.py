from audit.actions import record
from audit.models import Action


def token_used(request, action: str, *, project=None, **detail) -> None:
    """Audit that a token was used for a write (or to reveal secrets), naming the token, never its value."""
    token = request.auth
    record(
        token.user,
        Action.TOKEN_USE,
        project=project,
        detail={"token": token.pk, "token_name": token.name, "action": action, **detail},
    )
