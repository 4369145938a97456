from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Count, F, Func, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Mod
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

    def resting(self):
        """Cooling blocks whose cool-down is not over: the host's releases of the last
        BERTH_PORT_COOLDOWN seconds, a range of the (host, state, released_at) index."""
        return self.filter(state=BlockState.COOLING, released_at__gt=cooldown_cutoff())

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


class BlockCount(models.Model):
    """How many blocks of one host are in each state: what placement, the hosts page and
    /metrics read, one row per host, instead of counting the host's blocks.

    The database keeps it: triggers on PortBlock (migration 0004) change it in the
    statement that inserts, updates or deletes blocks, so every write (a lease, a release,
    a layout, a re-check, an admin fix, a bulk load) moves its counts in its own
    transaction, and a lease still costs its four round trips. `repair_block_counts`
    (ports/actions.py) checks the counts against the blocks and corrects them.

    `cooling` counts every cooling block, rested or not: whether a cool-down is over
    depends on the clock, not on a write, so readers count the resting ones themselves
    (`PortBlockQuerySet.resting`, an index range over the host's recent releases only).
    """

    host = models.OneToOneField(
        "hosts.RuntimeHost", on_delete=models.CASCADE, primary_key=True, related_name="block_count"
    )
    free = models.IntegerField(default=0)
    leased = models.IntegerField(default=0)
    cooling = models.IntegerField(default=0)
    blocked = models.IntegerField(default=0)

    STATES = ("free", "leased", "cooling", "blocked")

    def __str__(self):
        return f"{self.host_id}: " + ", ".join(f"{getattr(self, s)} {s}" for s in self.STATES)


def with_block_counts(hosts):
    """The hosts with `leased_blocks`, `cooling_blocks` (still resting) and `blocked_blocks`:
    their counts row (zeros for a host never laid out) and an index range over their releases
    of the last BERTH_PORT_COOLDOWN seconds. Reads a row per host whatever its blocks.

    `free_blocks(host)` follows from them and the host's range.
    """
    resting = PortBlock.objects.resting().filter(host=OuterRef("pk")).order_by()
    # A plain COUNT, not the aggregate, so the subquery has no GROUP BY and one row even when empty.
    resting_count = Subquery(resting.annotate(n=Func(F("pk"), function="COUNT")).values("n"), IntegerField())
    return hosts.annotate(
        leased_blocks=Coalesce(F("block_count__leased"), 0),
        blocked_blocks=Coalesce(F("block_count__blocked"), 0),
        cooling_blocks=resting_count,
    )


def block_capacity(host) -> int:
    """Whole blocks the host's range holds (block_layout's length, without building it)."""
    return max(0, (host.port_range_end - host.port_range_start + 1) // host.block_size)


def free_blocks(host) -> int:
    """Blocks of the host a lease could hand out now, for a host from `with_block_counts`:
    its layout less what is leased, resting or blocked. Free rows, cooled-down rows and
    blocks not laid out yet all count."""
    return max(0, block_capacity(host) - host.leased_blocks - host.cooling_blocks - host.blocked_blocks)
