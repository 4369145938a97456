import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator, URLValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.utils.regex_helper import _lazy_re_compile

from berth.crypto import EncryptedTextField
from templating.versions import supported_majors

PORT_MIN = 1024
PORT_MAX = 65535


class AgentURLValidator(URLValidator):
    """An http(s) URL whose host may be a single label too, such as a compose service (`http://agent:8470`)."""

    schemes = ["http", "https"]
    host_re = "(" + URLValidator.hostname_re + URLValidator.domain_re + "(?:" + URLValidator.tld_re + ")?)"
    regex = _lazy_re_compile(
        r"^(?:[a-z0-9.+-]*)://"
        r"(?:[^\s:@/]+(?::[^\s:@/]*)?@)?"
        r"(?:" + URLValidator.ipv4_re + "|" + URLValidator.ipv6_re + "|" + host_re + ")"
        r"(?::[0-9]{1,5})?"
        r"(?:[/?#][^\s]*)?"
        r"\Z",
        re.IGNORECASE,
    )


class RangeConflict(Exception):
    """A range change would leave leased port blocks outside the host's range."""

    code = "range_conflict"


def default_pooler_host() -> str:
    return settings.BERTH_POOLER_HOST or f"pooler.{settings.BERTH_DATABASE_DOMAIN}"


class RuntimeHost(models.Model):
    """A machine that runs project runtimes through its own agent, with its own port pool."""

    name = models.SlugField(max_length=63, unique=True)
    agent_url = models.CharField(
        max_length=200,
        validators=[AgentURLValidator()],
        help_text="Base URL of the host's agent, e.g. http://127.0.0.1:8470",
    )
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
    pooler_host = models.CharField(
        max_length=255,
        blank=True,
        validators=[
            RegexValidator(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", "A lowercase DNS name, e.g. pooler-2.example.com")
        ],
        help_text="DNS name of this host's pooler address (published pointing here); empty: BERTH_POOLER_HOST",
    )
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
            # A block of 0 ports lays out nothing and breaks every walk over the range (range() step 0).
            models.CheckConstraint(
                condition=Q(block_size__gte=1),
                name="host_block_size_positive",
                violation_error_message="A port block holds at least one port.",
            ),
        ]

    def __str__(self):
        return self.name

    def save(self, *args, **kwargs):
        # One transaction around the check and the write: the check locks the host row, and
        # that lock must last until the new range is written.
        with transaction.atomic():
            if self.pk is not None:
                # Lock the host row before looking: a lease reads the range under a share lock,
                # so none can claim against the old range between this check and the save.
                list(RuntimeHost.objects.select_for_update().filter(pk=self.pk).values_list("pk"))
                self.check_range_keeps_leases()
            super().save(*args, **kwargs)

    def clean(self):
        # Forms (the admin) hear of a range that strands leases as a field error, not a crash on save.
        if self.pk is not None:
            try:
                self.check_range_keeps_leases()
            except RangeConflict as conflict:
                raise ValidationError({"port_range_end": str(conflict)}) from None

    def pooler_address(self) -> str:
        """The pooler's host name for this host's projects."""
        return self.pooler_host or default_pooler_host()

    def router_status(self) -> dict | None:
        """The router and pooler as the agent last reported them (agent.api.RouterStatus), if it has one."""
        return self.capabilities.get("router")

    def check_range_keeps_leases(self) -> None:
        """Raise RangeConflict when this (unsaved) range would leave a leased block outside it."""
        stranded = self.stranded_blocks().values_list("first_port", "last_port", "project__ref").first()
        if stranded is not None:
            first, last, ref = stranded
            raise RangeConflict(
                f"Host {self.name}: the range {self.port_range_start}-{self.port_range_end} would leave "
                f"ports {first}-{last} of project {ref} outside it; release such leases first."
            )

    def stranded_blocks(self):
        """Port blocks leased outside this host's (perhaps unsaved) range: a range change must
        never produce one. A block is leased exactly when it names a project (a constraint of
        ports.PortBlock), so the reverse relation answers without the ports app above."""
        return self.port_blocks.filter(project__isnull=False).exclude(
            first_port__gte=self.port_range_start, last_port__lte=self.port_range_end
        )

    def holds_slots(self, slots: int) -> bool:
        """A block on this host is large enough for a template's `slots` ports."""
        return self.block_size >= slots

    def can_run(self, version, major: int) -> bool:
        """This host's driver runs the template version with that Postgres major."""
        return major in supported_majors(version, self)

    @property
    def has_reported(self) -> bool:
        """Its agent answered at least once, so what it runs is known (perhaps not current)."""
        return bool(self.capabilities)

    @property
    def reachable(self) -> bool:
        """Its agent answered at the last contact, so what it reported is current."""
        return self.has_reported and not self.last_error

    @property
    def driver(self) -> str:
        return self.capabilities.get("driver", "")

    @property
    def postgres_versions(self) -> list[int]:
        return sorted(int(v) for v in self.capabilities.get("postgres_versions", []))

    @property
    def probe_host(self) -> str:
        """Where runtimes are probed: the override, else what the agent resolved, else empty."""
        return self.probe_host_override or self.capabilities.get("probe_host", "")

    @property
    def ephemeral_ports(self) -> tuple[int, int] | None:
        """The kernel's ephemeral port range on the host, as its agent last reported it."""
        reported = self.capabilities.get("ephemeral_ports")
        if not isinstance(reported, list) or len(reported) != 2:
            return None
        return int(reported[0]), int(reported[1])

    @property
    def ephemeral_overlap(self) -> str:
        """A warning when the port range overlaps the kernel's ephemeral range, else empty.

        Client sockets take ports there (and hold them in TIME_WAIT), so blocks in the
        overlap turn up busy and get blocked.
        """
        ephemeral = self.ephemeral_ports
        if ephemeral is None:
            return ""
        low, high = max(self.port_range_start, ephemeral[0]), min(self.port_range_end, ephemeral[1])
        if low > high:
            return ""
        return (
            f"ports {low}-{high} of the range lie in the kernel's ephemeral port range "
            f"{ephemeral[0]}-{ephemeral[1]} (net.ipv4.ip_local_port_range), where client sockets take ports; "
            "move the range below it"
        )
