from django.db import models
from django.db.models import F, Q

from hosts.models import PORT_MAX, PORT_MIN


class BlockState(models.TextChoices):
    FREE = "free"
    LEASED = "leased"
    # Released, not yet handed out again, so ports a dying stack still holds stay unused.
    COOLING = "cooling"
    # Found in use by a foreign process; skipped until reconcile finds it free.
    BLOCKED = "blocked"


class PortBlock(models.Model):
    """One block of consecutive ports on one host; leased to at most one project at a time.

    Blocks are persisted rows, recycled forever, so the cost of a lease never depends on
    how many projects ever existed and no port is ever derived from a project id.
    """

    host = models.ForeignKey("hosts.RuntimeHost", on_delete=models.CASCADE, related_name="port_blocks")
    first_port = models.PositiveIntegerField()
    last_port = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=BlockState, default=BlockState.FREE)
    project = models.OneToOneField(
        "projects.Project", on_delete=models.PROTECT, null=True, blank=True, related_name="port_block"
    )
    leased_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    # Ref of the project that last held this block, kept after release for the record.
    last_project_ref = models.CharField(max_length=40, blank=True)
    blocked_reason = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "first_port"]
        constraints = [
            models.UniqueConstraint(fields=["host", "first_port"], name="port_block_unique_start"),
            models.CheckConstraint(
                condition=Q(first_port__gte=PORT_MIN) & Q(last_port__lte=PORT_MAX) & Q(first_port__lte=F("last_port")),
                name="port_block_in_valid_range",
                violation_error_message="A port block must lie within 1024-65535.",
            ),
            models.CheckConstraint(
                condition=(Q(state=BlockState.LEASED) & Q(project__isnull=False))
                | (~Q(state=BlockState.LEASED) & Q(project__isnull=True)),
                name="port_block_leased_iff_project",
            ),
        ]
        indexes = [models.Index(fields=["host", "state", "first_port"])]

    def __str__(self):
        return f"{self.host_id}:{self.first_port}-{self.last_port} ({self.state})"

    @property
    def ports(self) -> range:
        return range(self.first_port, self.last_port + 1)
