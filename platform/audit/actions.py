from audit.models import AuditEntry


def record(actor, action: str, *, project=None, detail: dict | None = None, label: str | None = None) -> AuditEntry:
    """Append an audit row; call inside the transaction of the action it records.

    `actor` is a user or None; `label` names a non-user actor such as "manage.py".
    """
    if actor is not None and getattr(actor, "is_authenticated", False):
        actor_label = actor.get_username()
    else:
        actor, actor_label = None, label or "system"
    return AuditEntry.objects.create(
        actor=actor, actor_label=actor_label, action=action, project=project, detail=detail or {}
    )
