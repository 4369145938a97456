from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from berth.crypto import EncryptedTextField

PORT_MIN = 1024
PORT_MAX = 65535


class RuntimeHost(models.Model):
    """A machine that runs project runtimes through its own agent, with its own port pool."""

    name = models.SlugField(max_length=63, unique=True)
    agent_url = models.URLField(help_text="Base URL of the host's agent, e.g. http://127.0.0.1:8470")
    agent_token = EncryptedTextField(help_text="Bearer token the agent requires; stored encrypted")
    port_range_start = models.PositiveIntegerField(
        validators=[MinValueValidator(PORT_MIN), MaxValueValidator(PORT_MAX)]
    )
    port_range_end = models.PositiveIntegerField(validators=[MinValueValidator(PORT_MIN), MaxValueValidator(PORT_MAX)])
    block_size = models.PositiveSmallIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Consecutive ports leased to one project",
    )
    probe_host_override = models.CharField(
        max_length=255, blank=True, help_text="Host the agent probes runtimes on; empty: the agent resolves it"
    )
    region = models.CharField(
        max_length=32,
        blank=True,
        help_text="Region label (e.g. us-east-1); a project asking for a region goes to hosts with that label or none",
    )
    accepts_projects = models.BooleanField(default=True, help_text="Placement may put new projects here")
    # What the agent reported in its last info reply: driver, Postgres majors, probe host, compose.
    capabilities = models.JSONField(default=dict, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(port_range_start__gte=PORT_MIN)
                & Q(port_range_end__lte=PORT_MAX)
                & Q(port_range_start__lte=F("port_range_end") - F("block_size") + 1),
                name="host_port_range_valid",
                violation_error_message="Port range must lie within 1024-65535 and hold at least one block.",
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        # Forms (the admin) hear of a range that strands leases as a field error, not a crash on save.
        from ports.errors import RangeConflict
        from ports.signals import check_range_keeps_leases

        if self.pk is not None:
            try:
                check_range_keeps_leases(self)
            except RangeConflict as conflict:
                raise ValidationError({"port_range_end": str(conflict)}) from None

    @property
    def driver(self) -> str:
        return self.capabilities.get("driver", "")

    @property
    def postgres_versions(self) -> list[int]:
        return sorted(int(v) for v in self.capabilities.get("postgres_versions", []))
