from audit.actions import record


def token_used(request, action: str, *, project=None, **detail) -> None:
    """Audit that a token was used for a write (or to reveal secrets), naming the token, never its value."""
    token = request.auth
    record(
        token.user,
        "token.use",
        project=project,
        detail={"token": token.pk, "token_name": token.name, "action": action, **detail},
    )
