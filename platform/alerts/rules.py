"""Alert rules: each says which subjects are in its condition now; `evaluate` opens an
incident for each new one and resolves the open ones no longer in it (alerts.actions).
Run by the worker (schedule `berth-alerts` every minute; certificates hourly, as reading
them decrypts every project's secrets).

"""

from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from django.conf import settings
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from alerts.actions import open_incident, resolve_incident
from alerts.models import Incident, Rule
from backups.models import Protection
from hosts.models import RuntimeHost
from operations.models import Rollout
from projects.models import Project, Status, StatusChange


@dataclass(frozen=True)
class Firing:
    summary: str
    status: str
    organization_id: int | None = None
    project_ref: str = ""


FAILING_STATUSES = (Status.INIT_FAILED, Status.ACTIVE_UNHEALTHY)


def projects_failing(now) -> dict[str, Firing]:
    """Live projects the status gate moved to INIT_FAILED or ACTIVE_UNHEALTHY, each said with
    its latest typed status change (issue 28's StatusChange: when, why, what moved it). One
    incident per project while it stays in either; it resolves when the gate moves it out.
    Reads the failing projects only (the status index) and one change row each."""
    latest = StatusChange.objects.filter(project=OuterRef("pk")).order_by("-at", "-id")
    failing = (
        Project.objects.filter(status__in=FAILING_STATUSES)
        .annotate(
            change_at=Subquery(latest.values("at")[:1]),
            change_reason=Subquery(latest.values("reason")[:1]),
            change_cause=Subquery(latest.values("cause")[:1]),
        )
        .only("ref", "status", "organization", "status_reason")
    )
    found = {}
    for project in failing:
        since = f" since {project.change_at:%Y-%m-%d %H:%M} UTC" if project.change_at else ""
        why = project.change_reason or project.status_reason or "no reason recorded"
        moved_by = f" ({project.change_cause})" if project.change_cause else ""
        found[project.ref] = Firing(
            f"project {project.ref} is {project.status}{since}{moved_by}: {why}",
            project.status,
            project.organization_id,
            project.ref,
        )
    return found


def hosts_unreachable(now) -> dict[str, Firing]:
    """Hosts whose agent failed its last contact and has not answered for
    BERTH_ALERT_HOST_UNREACHABLE_MINUTES (the metrics pass asks every host each interval)."""
    since = now - timedelta(minutes=settings.BERTH_ALERT_HOST_UNREACHABLE_MINUTES)
    quiet = Q(last_seen_at__lt=since) | Q(last_seen_at__isnull=True, created_at__lt=since)
    found = {}
    for host in RuntimeHost.objects.exclude(last_error="").filter(quiet):
        heard = f"last answered {host.last_seen_at:%Y-%m-%d %H:%M} UTC" if host.last_seen_at else "never answered"
        found[host.name] = Firing(f"host {host.name} unreachable ({heard}): {host.last_error}", "unreachable")
    return found


def rollouts_halted(now) -> dict[str, Firing]:
    found = {}
    for rollout in Rollout.objects.filter(state=Rollout.State.HALTED).select_related("target"):
        summary = (
            f"rollout #{rollout.pk} of {rollout.template} to r{rollout.target.revision} halted: "
            f"{rollout.reason or 'see its page'}"
        )
        found[str(rollout.pk)] = Firing(summary, "halted")
    return found


def certificates_expiring(now) -> dict[str, Firing]:
    """Live projects whose TLS certificate (templating.secrets) ends within BERTH_ALERT_CERT_DAYS."""
    horizon = now + timedelta(days=settings.BERTH_ALERT_CERT_DAYS)
    found = {}
    for project in Project.objects.live().only("ref", "organization", "secrets").iterator(chunk_size=500):
        pem = project.secrets.get("tls_cert")
        if not pem:
            continue
        ends = x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc
        if ends <= horizon:
            state = "expired" if ends <= now else "expiring"
            found[project.ref] = Firing(
                f"the TLS certificate of {project.ref} {'ended' if ends <= now else 'ends'} {ends:%Y-%m-%d %H:%M} UTC",
                state,
                project.organization_id,
                project.ref,
            )
    return found


def protection_failing(now) -> dict[str, Firing]:
    """Live projects whose last base backup, WAL archiving (with PostgreSQL's reason) or
    restore test failed (backups.models.Protection.failure); one incident per project until
    a backup succeeds, archiving catches up and the restore test passes again."""
    found = {}
    for protection in Protection.objects.failing().select_related("project"):
        project = protection.project
        since = f" since {protection.failure_since:%Y-%m-%d %H:%M} UTC" if protection.failure_since else ""
        found[project.ref] = Firing(
            f"the backups of {project.ref} are failing{since}: {protection.failure}",
            "failing",
            project.organization_id,
            project.ref,
        )
    return found


FREQUENT = {
    Rule.PROJECT_STATUS: projects_failing,
    Rule.HOST_UNREACHABLE: hosts_unreachable,
    Rule.ROLLOUT_HALTED: rollouts_halted,
    Rule.PROTECTION_FAILING: protection_failing,
}
HOURLY = {Rule.CERTIFICATE_EXPIRY: certificates_expiring}


def evaluate(rules=FREQUENT, now=None) -> tuple[int, int]:
    """Apply each rule's findings; returns (incidents opened, incidents resolved)."""
    now = now or timezone.now()
    opened = resolved = 0
    for rule, find in rules.items():
        firing = find(now)
        open_now = {
            incident.subject: incident for incident in Incident.objects.filter(rule=rule, resolved_at__isnull=True)
        }
        for subject, fire in firing.items():
            if subject not in open_now:
                opened += open_incident(
                    rule,
                    subject,
                    summary=fire.summary,
                    status=fire.status,
                    organization_id=fire.organization_id,
                    project_ref=fire.project_ref,
                )
        for subject, incident in open_now.items():
            if subject not in firing:
                resolved += resolve_incident(incident)
    return opened, resolved
