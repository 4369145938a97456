from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, F, Q
from django.db.models.functions import Mod
from django.utils import timezone

from hosts.models import PORT_MAX, PORT_MIN


class BlockState(models.TextChoices):
    FREE = "free"
    LEASED = "leased"
    # Released, not yet handed out again, so ports a dying stack still holds stay unused.
    COOLING = "cooling"
    # Found in use by a foreign process; skipped until reconcile finds it free.
    BLOCKED = "blocked"


def block_layout(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """The (first, last) blocks a host's range holds: aligned to its start, whole blocks only.

    Every block lies inside [start, end]; a remainder smaller than a block is left unused.
    """
    return [(first, first + size - 1) for first in range(start, end - size + 2, size)]


def cooldown_cutoff():
    """Blocks released at or before this moment have rested long enough to be reused."""
    return timezone.now() - timedelta(seconds=settings.BERTH_PORT_COOLDOWN)


class PortBlockQuerySet(models.QuerySet):
    def inside_range(self, host):
        """Blocks that lie inside the host's configured range (a range change can leave others behind)."""
        return self.filter(host=host, first_port__gte=host.port_range_start, last_port__lte=host.port_range_end)

    def outside_layout(self, host):
        """Blocks of the host that are not blocks of its current layout (its range or block size changed)."""
        start, size = host.port_range_start, host.block_size
        return (
            self.filter(host=host)
            .annotate(offset=Mod(F("first_port") - start, size))
            .exclude(
                first_port__gte=start,
                last_port__lte=host.port_range_end,
                last_port=F("first_port") + size - 1,
                offset=0,
            )
        )

    def cooled(self):
        return self.filter(state=BlockState.COOLING, released_at__lte=cooldown_cutoff())

    def removable(self):
        """Blocks no project holds or may still hold ports of: free, blocked, or cooled down."""
        return self.filter(
            Q(state__in=[BlockState.FREE, BlockState.BLOCKED])
            | Q(state=BlockState.COOLING, released_at__lte=cooldown_cutoff())
        )

    def holding(self, slots: int):
        return self.filter(last_port__gte=F("first_port") + slots - 1)

    def counts(self) -> "BlockCounts":
        """How many blocks are free (cooled-down ones included), leased, cooling, blocked: one query."""
        cutoff = cooldown_cutoff()
        resting = Q(state=BlockState.COOLING, released_at__gt=cutoff)
        return BlockCounts(
            **self.aggregate(
                free=Count("pk", filter=Q(state=BlockState.FREE) | Q(state=BlockState.COOLING) & ~resting),
                leased=Count("pk", filter=Q(state=BlockState.LEASED)),
                cooling=Count("pk", filter=resting),
                blocked=Count("pk", filter=Q(state=BlockState.BLOCKED)),
            )
        )


@dataclass(frozen=True)
class BlockCounts:
    """Block counts of one host, as the exhaustion error and the report show them."""

    free: int
    leased: int
    cooling: int
    blocked: int

    def __str__(self):
        return f"{self.leased} leased, {self.cooling} cooling, {self.blocked} blocked, {self.free} free"


class PortBlock(models.Model):
    """One block of consecutive ports on one host; leased to at most one project at a time.

    Blocks are persisted rows, recycled forever, so the cost of a lease never depends on
    how many projects ever existed and no port is ever derived from a project id. On
    PostgreSQL an exclusion constraint (migration 0002) forbids two blocks of one host
    from overlapping, whatever their state.
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
    # Leased: when the ports were found free for this lease (null: not yet checked).
    # Blocked: when the ports were last found busy.
    checked_at = models.DateTimeField(null=True, blank=True)

    objects = PortBlockQuerySet.as_manager()

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
        indexes = [
            models.Index(fields=["host", "state", "first_port"]),
            # A lease takes the lowest free block, then the longest-cooled one: both are index scans.
            # The free blocks have an index of their own: leases fill a host from its lowest port,
            # so the free ones sit above a run of leased ones that a planner estimating from the
            # share of free rows would otherwise walk through (index on host, first_port), one
            # more leased row per lease.
            models.Index(fields=["host", "first_port"], condition=Q(state="free"), name="port_block_free_idx"),
            models.Index(fields=["host", "state", "released_at"], name="port_block_cooling_idx"),
        ]

    def __str__(self):
        return f"{self.host_id}:{self.first_port}-{self.last_port} ({self.state})"

    @property
    def ports(self) -> range:
        return range(self.first_port, self.last_port + 1)
