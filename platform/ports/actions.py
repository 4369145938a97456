"""Verbs on port leases: lay out a host's blocks, lease, release, re-check, reconcile.

Invariants:
- every block lies within 1024-65535 and no two blocks of one host overlap (database
  constraints; the overlap one on PostgreSQL, migration 0002);
- a leased block names its project, and a project holds at most one block (database);
- a block is handed out only while it lies inside its host's current range and holds the
  slots asked for: the claim reads the range under a share lock on the host row, and a
  range change that would leave a lease outside is refused (RuntimeHost.save);
- a released block rests BERTH_PORT_COOLDOWN seconds before it is handed out again;
- lease_ports returns a block only once its ports were found free on the host.

A lease costs the same however many projects ever existed: the claim is one index scan
for the lowest free block (else the longest-cooled one) with SKIP LOCKED, so concurrent
workers take different blocks instead of queueing behind one. On PostgreSQL a lease that
gets a new block is four round trips: BEGIN, one statement that takes the locks and the
claim, the write, COMMIT (tests/ports/test_lease.py pins the count).
"""

import logging
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Count, F, Q, Subquery
from django.utils import timezone

from audit.actions import record
from audit.models import Action
from hosts.models import RuntimeHost
from ports.checkers import PortChecker, checker_for
from ports.errors import NotLeasable, PortCheckFailed, PortsBusy, PortsExhausted, TooManySlots
from ports.models import BlockCount, BlockState, PortBlock, block_layout, cooldown_cutoff
from projects.models import Project, Status

logger = logging.getLogger(__name__)

# A lease gives up after this many blocks in a row turn out busy, rather than walk a whole
# range that foreign listeners fill; each busy block is marked blocked for reconcile.
BUSY_TRIES = 8


@dataclass(frozen=True)
class LayoutChange:
    created: int
    removed: int


@dataclass(frozen=True)
class Recheck:
    block: PortBlock
    busy: frozenset[int]


@dataclass
class Reconciliation:
    changes: list[str]
    problems: list[str]


def lease_ports(project: Project, slots_needed: int, *, checker: PortChecker | None = None) -> PortBlock:
    """The project's block on its host, claimed and checked if it has none; idempotent and race-free.

    One transaction: lock the project row, share-lock the host, take the lowest free block
    (else the longest-cooled one) with SKIP LOCKED, ask the host whether its ports are free
    while that row lock is held, and write the lease as checked. A block found busy is
    marked blocked and the next one taken, at most BUSY_TRIES times. A check that fails
    (agent unreachable) rolls the claim back: nothing is leased unchecked.

    Holding the rows during the check costs no concurrency: other leases skip the locked
    block, the host row is only share-locked (a range change waits for at most one agent
    call), and the project row is written by nobody else while its operation leases.
    """
    if slots_needed < 1:
        raise ValueError("a project needs at least one port slot")
    laid_out = rechecked = False
    while True:
        try:
            host, block, busy = _lease_once(project, slots_needed, checker)
        except _LeasedMeanwhile:
            continue  # the next attempt finds that block and returns it
        if block is not None:
            return block
        if busy >= BUSY_TRIES:
            raise PortsBusy(
                f"Host {host.name}: {BUSY_TRIES} port blocks in a row were in use by other processes and are now "
                "marked blocked; they are re-checked when the host has no free block left, and by "
                "`manage.py ports reconcile`."
            )
        if not laid_out:
            # Blocks are laid out lazily: a new host, or a changed range, gets its rows here;
            # a full host whose layout is complete is not laid out again on each refusal.
            # Either way the claim is tried once more: a concurrent lease may have just laid
            # the blocks out after our claim looked.
            laid_out = True
            if not _laid_out(host):
                sync_port_blocks(host)
            continue
        if not rechecked:
            # Blocks found busy earlier may be free by now (a client socket left TIME_WAIT):
            # a host is full only once its blocked blocks were asked about again.
            rechecked = True
            if _recheck_some_blocked(host, slots_needed, checker or checker_for(host)):
                continue
        raise PortsExhausted(
            f"Host {host.name} has no port block to lease ({PortBlock.objects.inside_range(host).counts()}; "
            f"range {host.port_range_start}-{host.port_range_end} in blocks of {host.block_size}). "
            "Run `manage.py ports reconcile` to release leases of deleted projects, or widen the range."
        )


class _LeasedMeanwhile(Exception):
    """The project got a block from a concurrent lease that committed while this one waited for
    the project row: this lease's claim is rolled back and the lease starts over."""


def _lease_once(
    project: Project, slots_needed: int, checker: PortChecker | None
) -> tuple[RuntimeHost, PortBlock | None, int]:
    """The one transaction of a lease: (host, checked block or None, blocks found busy)."""
    with transaction.atomic():
        host, block, claimed = _locked(project, slots_needed)
        checker = checker or checker_for(host)
        if block is not None:
            if block.checked_at is not None:
                return host, block, 0
            # Leased by an earlier version that checked outside its claim: check it now.
            taken = checker.taken(host, block.ports)
            if not taken:
                return host, _mark_checked(block), 0
            _mark_busy(block, taken)
            claimed = _claimable(host, slots_needed)
        for busy in range(BUSY_TRIES):
            block = claimed if busy == 0 else _claimable(host, slots_needed)
            if block is None:
                return host, None, busy
            taken = checker.taken(host, block.ports)
            if not taken:
                return host, _lease(block, project), busy
            _block(block, taken)
        return host, None, BUSY_TRIES


def _locked(project: Project, slots_needed: int) -> tuple[RuntimeHost, PortBlock | None, PortBlock | None]:
    """Under the project row lock and the host share lock: (host, the project's block if it
    holds one, else the block claimed for it or None).

    On PostgreSQL the locks, the held block and the claim are one statement
    (_locked_with_claim); a project without a host takes the step by step way, as every
    lease does on SQLite.
    """
    if connection.features.has_select_for_update:
        host = _locked_with_claim(project.pk, slots_needed)
        if host is not None:
            if host.project_status == Status.REMOVED:
                raise _deleted(project)
            if host.held_block is not None:
                existing = _held(project, slots_needed)
                return existing.host, existing, None
            _check_block_size(project, host, slots_needed)
            return host, None, host.claimed
    host, block = _existing_or_host(project, slots_needed)
    return host, block, _claimable(host, slots_needed) if block is None else None


def _existing_or_host(project: Project, slots_needed: int) -> tuple[RuntimeHost, PortBlock | None]:
    """Under the project row lock: its block if it holds one, and its (share-locked) host.

    The project row lock serialises leases of one project, so it never claims two blocks;
    the unique project column would refuse a second one anyway.
    """
    status, host_id = Project.objects.select_for_update().values_list("status", "host_id").get(pk=project.pk)
    if status == Status.REMOVED:
        raise _deleted(project)
    # Both read after the lock (a statement of their own, so a new snapshot): a lease that
    # held the lock before us is seen.
    host = _share_locked_host(host_id, holder=project.pk) if host_id is not None else None
    held = PortBlock.objects.filter(project_id=project.pk) if host is None else None
    if (host is not None and host.held_block is not None) or (held is not None and held.exists()):
        existing = _held(project, slots_needed)
        return existing.host, existing
    if host is None:
        raise NotLeasable(f"Project {project.ref} is not placed on a host yet.")
    _check_block_size(project, host, slots_needed)
    return host, None


def _held(project: Project, slots_needed: int) -> PortBlock:
    """The block the project holds, read in a statement of its own (after its row lock), with its host."""
    existing = PortBlock.objects.select_related("host").get(project_id=project.pk)
    if len(existing.ports) < slots_needed:
        raise TooManySlots(
            f"Project {project.ref} holds ports {existing.first_port}-{existing.last_port} but its "
            f"template now needs {slots_needed} port slots."
        )
    return existing


def _deleted(project: Project) -> NotLeasable:
    return NotLeasable(f"Project {project.ref} is deleted; it gets no ports.")


def _check_block_size(project: Project, host: RuntimeHost, slots_needed: int) -> None:
    if slots_needed > host.block_size:
        raise TooManySlots(
            f"The template of {project.ref} needs {slots_needed} port slots but a block on host {host.name} "
            f"holds {host.block_size} ports; raise the host's block size or trim the template's [ports]."
        )


def _lock_and_claim_sql() -> str:
    """The statement of _locked_with_claim; built once."""
    projects, hosts, blocks = Project._meta.db_table, RuntimeHost._meta.db_table, PortBlock._meta.db_table
    claim_columns = ", ".join(f"claim.{field.column} AS claim_{field.column}" for field in _BLOCK_FIELDS)
    # Each branch as _claimable's: inside the locked range, holding the slots, SKIP LOCKED;
    # the cooled branch runs only when the free one finds nothing.
    candidates = (
        f"SELECT * FROM {blocks} AS block WHERE owner.held_block IS NULL AND block.host_id = owner.id"
        " AND block.first_port >= owner.port_range_start AND block.last_port <= owner.port_range_end"
        " AND block.last_port >= block.first_port + %(slots)s - 1"
    )
    return f"""
        WITH owner AS MATERIALIZED (
            SELECT host.*, project.status AS project_status,
                   (SELECT id FROM {blocks} WHERE project_id = project.id) AS held_block
            FROM {projects} AS project JOIN {hosts} AS host ON host.id = project.host_id
            WHERE project.id = %(project)s
            FOR UPDATE OF project FOR SHARE OF host
        )
        SELECT owner.*, {claim_columns} FROM owner LEFT JOIN LATERAL (
            SELECT * FROM ({candidates} AND block.state = %(free)s
                           ORDER BY block.first_port LIMIT 1 FOR UPDATE SKIP LOCKED) AS free
            UNION ALL
            SELECT * FROM ({candidates} AND block.state = %(cooling)s AND block.released_at <= %(cutoff)s
                           ORDER BY block.released_at LIMIT 1 FOR UPDATE SKIP LOCKED) AS cooled
            LIMIT 1
        ) AS claim ON true
    """


_BLOCK_FIELDS = PortBlock._meta.concrete_fields
_LOCK_AND_CLAIM_SQL = _lock_and_claim_sql()


def _locked_with_claim(project_id: int, slots_needed: int) -> RuntimeHost | None:
    """PostgreSQL: one statement that locks the project row, share-locks its host, reads the
    block the project holds and, when it holds none, claims a block for it the way _claimable
    does. The host, with `project_status`, `held_block` (an id or None) and `claimed` (a
    PortBlock or None); None when the project has no host.

    The locks are taken first (the claim is a lateral subquery fed by the locked row), and a
    locked row is read as it is now even when the statement waited for it: the claim keeps to
    the host's range as it stands under the share lock. What the statement read of other rows
    may be older: the project's block, when a concurrent lease of the same project committed
    while this one waited for the project row. _lease writes the lease only if the project
    still holds no block, read afresh.
    """
    params = {
        "project": project_id,
        "slots": slots_needed,
        "free": BlockState.FREE.value,
        "cooling": BlockState.COOLING.value,
        "cutoff": cooldown_cutoff(),
    }
    host = next(iter(RuntimeHost.objects.raw(_LOCK_AND_CLAIM_SQL, params)), None)
    if host is None:
        return None
    claimed = [getattr(host, f"claim_{field.column}") for field in _BLOCK_FIELDS]
    host.claimed = None
    if claimed[0] is not None:
        host.claimed = PortBlock.from_db(connection.alias, [field.attname for field in _BLOCK_FIELDS], claimed)
        host.claimed.host = host
    return host


def _claimable(host: RuntimeHost, slots_needed: int) -> PortBlock | None:
    """The lowest free block inside the host's range, else the longest-cooled one; row-locked, skipping locked ones."""
    candidates = PortBlock.objects.inside_range(host).holding(slots_needed).select_for_update(skip_locked=True)
    block = (
        candidates.filter(state=BlockState.FREE).order_by("first_port").first()
        or candidates.cooled().order_by("released_at").first()
    )
    if block is not None:
        block.host = host
    return block


def _laid_out(host: RuntimeHost) -> bool:
    """The host has the first and the last block of its current layout and no block beyond
    them: a sync created them (it creates all missing blocks at once and removes the ones a
    shrunk range left behind), so the current range and block size are laid out. One query
    on the (host, first_port) index, however many blocks the host has."""
    start, size = host.port_range_start, host.block_size
    last_first = start + ((host.port_range_end - start + 1) // size - 1) * size
    ends = Q(first_port__in={start, last_first}, last_port=F("first_port") + size - 1)
    beyond = Q(first_port__lt=start) | Q(first_port__gt=last_first)
    found = PortBlock.objects.filter(ends | beyond, host=host).aggregate(
        ends=Count("pk", filter=ends), beyond=Count("pk", filter=beyond)
    )
    return found["ends"] == len({start, last_first}) and not found["beyond"]


def _lease(block: PortBlock, project: Project) -> PortBlock:
    """Write the claimed block's lease, unless the project holds a block by now (read afresh:
    the claim may have read an older state, see _locked_with_claim); raises _LeasedMeanwhile then."""
    now = timezone.now()
    table = PortBlock._meta.db_table
    stamp = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET state = %s, project_id = %s, last_project_ref = %s, leased_at = %s,"
            " released_at = NULL, checked_at = %s, blocked_reason = ''"
            f" WHERE id = %s AND NOT EXISTS (SELECT 1 FROM {table} WHERE project_id = %s)",
            [BlockState.LEASED.value, project.pk, project.ref, stamp, stamp, block.pk, project.pk],
        )
        if cursor.rowcount != 1:
            raise _LeasedMeanwhile
    block.state, block.project, block.last_project_ref = BlockState.LEASED, project, project.ref
    block.leased_at, block.released_at, block.checked_at, block.blocked_reason = now, None, now, ""
    return block


def _share_locked_host(host_id: int, *, holder: int | None = None) -> RuntimeHost:
    """The host as stored now; on PostgreSQL share-locked, so its range cannot change until we commit.
    With `holder` (a project id), `held_block` is the id of the block that project holds, or None,
    read in the same statement.

    Share locks do not conflict with each other: concurrent leases on one host still run side by side.
    """
    blocks = PortBlock._meta.db_table
    if not connection.features.has_select_for_update:
        held = PortBlock.objects.filter(project_id=holder).values("pk")[:1]
        return RuntimeHost.objects.annotate(held_block=Subquery(held)).get(pk=host_id)
    table = RuntimeHost._meta.db_table
    sql = (
        f"SELECT *, (SELECT id FROM {blocks} WHERE project_id = %s) AS held_block FROM {table} WHERE id = %s FOR SHARE"
    )
    return RuntimeHost.objects.raw(sql, [holder, host_id])[0]


# A lease that finds no free block re-checks at most this many ports' worth of blocked
# blocks (the ones checked longest ago), in one agent call.
RECHECK_PORTS = 1024


def _recheck_some_blocked(host: RuntimeHost, slots_needed: int, checker: PortChecker) -> int:
    """Re-check the host's longest-unchecked blocked blocks; returns how many are free again."""
    blocked = PortBlock.objects.inside_range(host).holding(slots_needed).filter(state=BlockState.BLOCKED)
    chosen, ports = [], 0
    for block in blocked.order_by("checked_at", "first_port")[: RECHECK_PORTS // max(1, slots_needed)]:
        if chosen and ports + len(block.ports) > RECHECK_PORTS:
            break
        chosen.append(block)
        ports += len(block.ports)
    if not chosen:
        return 0
    try:
        rechecks = recheck_blocks(chosen, checker=checker)
    except PortCheckFailed:
        return 0
    return sum(1 for recheck in rechecks if not recheck.busy)


def _mark_checked(block: PortBlock) -> PortBlock:
    block.checked_at = timezone.now()
    PortBlock.objects.filter(pk=block.pk).update(checked_at=block.checked_at)
    return block


def _mark_busy(block: PortBlock, taken: set[int]) -> None:
    """Take back an unchecked lease whose ports turned out busy (a verified one may be busy
    with the project's own stack, so only an unchecked one is taken back)."""
    block.project = None
    PortBlock.objects.filter(pk=block.pk, state=BlockState.LEASED, checked_at__isnull=True).update(
        state=BlockState.BLOCKED, project=None, leased_at=None, checked_at=timezone.now(), blocked_reason=_busy(taken)
    )


def _block(block: PortBlock, taken: set[int]) -> None:
    PortBlock.objects.filter(pk=block.pk).update(
        state=BlockState.BLOCKED, checked_at=timezone.now(), blocked_reason=_busy(taken)
    )


def _busy(taken) -> str:
    ports = sorted(taken)
    shown = ", ".join(str(p) for p in ports[:10]) + (" ..." if len(ports) > 10 else "")
    return f"in use by another process: {shown}"


def sync_port_blocks(host: RuntimeHost) -> LayoutChange:
    """Make the host's blocks match its range and block size; idempotent, safe beside concurrent leases.

    Creates the missing blocks of the layout and removes blocks that left it once nothing
    holds them (free, blocked, cooled down). Leased and still-cooling blocks stay; layout
    blocks that would overlap them are created by a later sync, after they are gone.
    """
    with transaction.atomic():
        host = _share_locked_host(host.pk)
        # SKIP LOCKED: a block a concurrent lease is claiming is kept; it is no longer free.
        stale = PortBlock.objects.outside_layout(host).removable().select_for_update(skip_locked=True)
        removed = list(stale.values_list("pk", flat=True))
        for start in range(0, len(removed), 1000):
            PortBlock.objects.filter(pk__in=removed[start : start + 1000]).delete()
        kept = list(PortBlock.objects.filter(host=host).order_by("first_port").values_list("first_port", "last_port"))
        missing = _not_overlapping(block_layout(host.port_range_start, host.port_range_end, host.block_size), kept)
        # ignore_conflicts: a concurrent sync may insert the same blocks; on PostgreSQL the
        # unique start and the exclusion constraint both act as ON CONFLICT DO NOTHING arbiters.
        PortBlock.objects.bulk_create(
            [PortBlock(host=host, first_port=first, last_port=last) for first, last in missing],
            batch_size=2000,
            ignore_conflicts=True,
        )
    return LayoutChange(created=len(missing), removed=len(removed))


def _not_overlapping(layout: list[tuple[int, int]], kept: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Blocks of the (sorted) layout that overlap none of the (sorted, disjoint) kept blocks."""
    result, i = [], 0
    for first, last in layout:
        while i < len(kept) and kept[i][1] < first:
            i += 1
        if i == len(kept) or kept[i][0] > last:
            result.append((first, last))
    return result


def release_ports(project: Project, *, actor=None, label: str | None = None) -> PortBlock | None:
    """Put the project's block into its cool-down; idempotent (None when it holds none).

    An audit row is written when the caller names who acted (`actor` or `label`); the
    operation runner's release is recorded in its operation's events instead.
    """
    with transaction.atomic():
        block = PortBlock.objects.select_for_update().filter(project_id=project.pk).first()
        if block is None:
            return None
        block.state, block.project, block.released_at = BlockState.COOLING, None, timezone.now()
        block.last_project_ref = project.ref
        block.save(update_fields=["state", "project", "released_at", "last_project_ref"])
        if actor is not None or label is not None:
            record(actor, Action.PORTS_RELEASE, project=project, detail=_where(block), label=label)
    return block


def recheck_blocks(
    blocks, *, checker: PortChecker | None = None, actor=None, label: str | None = None
) -> list[Recheck]:
    """Ask each blocked block's host whether its ports are free now; free ones become free blocks.

    One check per host covers all its blocks. Blocks no longer blocked are left alone.
    Raises PortCheckFailed when a host cannot be asked.
    """
    results = []
    by_host: dict[int, list[PortBlock]] = {}
    still_blocked = PortBlock.objects.filter(pk__in=[b.pk for b in blocks], state=BlockState.BLOCKED)
    for block in still_blocked.select_related("host"):
        by_host.setdefault(block.host_id, []).append(block)
    for host_blocks in by_host.values():
        host = host_blocks[0].host
        taken = (checker or checker_for(host)).taken(host, [p for block in host_blocks for p in block.ports])
        host_results = [Recheck(block, frozenset(taken.intersection(block.ports))) for block in host_blocks]
        with transaction.atomic():
            # Lock them all first, in id order: each state change below also takes the host's
            # counts row, and a concurrent re-check must wait here holding nothing rather than
            # hold a block while it waits for that row.
            list(PortBlock.objects.select_for_update().filter(pk__in=[b.pk for b in host_blocks]).order_by("pk"))
            now = timezone.now()
            for recheck in host_results:
                still_blocked = PortBlock.objects.filter(pk=recheck.block.pk, state=BlockState.BLOCKED)
                if recheck.busy:
                    still_blocked.update(checked_at=now, blocked_reason=_busy(recheck.busy))
                else:
                    still_blocked.update(state=BlockState.FREE, checked_at=now, blocked_reason="")
            if actor is not None or label is not None:
                detail = {
                    "host": host.name,
                    "freed": [_where(r.block) for r in host_results if not r.busy],
                    "busy": [_where(r.block) for r in host_results if r.busy],
                }
                record(actor, Action.PORTS_RECHECK, detail=detail, label=label)
        results.extend(host_results)
    return results


def reconcile_ports(hosts=None, *, checker: PortChecker | None = None, label: str = "manage.py ports"):
    """Release leases of deleted projects, lay out each host's blocks, re-check blocked blocks,
    correct block counts that differ from the blocks.

    Returns what changed and what could not be done (a host whose agent did not answer).
    """
    hosts = list(RuntimeHost.objects.all() if hosts is None else hosts)
    result = Reconciliation(changes=[], problems=[])
    deleted = PortBlock.objects.filter(host__in=hosts, state=BlockState.LEASED, project__status=Status.REMOVED)
    for block in deleted.select_related("host", "project"):
        if release_ports(block.project, label=label) is not None:
            result.changes.append(f"{block.host.name}: released {_span(block)} of deleted project {block.project.ref}")
    for host in hosts:
        change = sync_port_blocks(host)
        if change.created:
            result.changes.append(f"{host.name}: laid out {change.created} new blocks")
        if change.removed:
            result.changes.append(f"{host.name}: removed {change.removed} blocks outside its layout")
        blocked = list(PortBlock.objects.filter(host=host, state=BlockState.BLOCKED))
        if not blocked:
            continue
        try:
            rechecks = recheck_blocks(blocked, checker=checker, label=label)
        except PortCheckFailed as error:
            result.problems.append(f"{host.name}: {error}")
            continue
        for recheck in rechecks:
            if not recheck.busy:
                result.changes.append(f"{host.name}: {_span(recheck.block)} is free again")
    result.changes.extend(repair_block_counts(hosts, label=label))
    return result


def repair_block_counts(hosts=None, *, label: str = "berth-ports-repair") -> list[str]:
    """Check each host's counts row against its blocks and correct it where it differs;
    returns a line per corrected host (each also an audit row and a warning in the log).

    The triggers keep the counts in every transaction that changes blocks, so a correction
    means something wrote blocks past them (a trigger dropped by hand, a restore of one
    table): like Kubernetes' port allocator repairing its bitmap, this is the backstop that
    makes such a drift short-lived, not the way counts are kept. Per host: lock its counts
    row, then count its blocks. A writer changing the host's blocks meanwhile waits for that
    lock before its own counts change, and its blocks are not visible to the count until it
    commits, so the two always agree on what they saw.
    """
    hosts = list(RuntimeHost.objects.all() if hosts is None else hosts)
    states = BlockCount.STATES
    corrected = []
    for host in hosts:
        with transaction.atomic():
            BlockCount.objects.bulk_create([BlockCount(host=host)], ignore_conflicts=True)
            counted = BlockCount.objects.select_for_update().get(host=host)
            actual = PortBlock.objects.filter(host=host).aggregate(
                **{state: Count("pk", filter=Q(state=state)) for state in states}
            )
            wrong = {
                s: {"counted": getattr(counted, s), "blocks": actual[s]}
                for s in states
                if getattr(counted, s) != actual[s]
            }
            if not wrong:
                continue
            BlockCount.objects.filter(host=host).update(**actual)
            record(None, Action.PORTS_REPAIR_COUNTS, detail={"host": host.name, "corrected": wrong}, label=label)
        line = f"{host.name}: block counts corrected: " + ", ".join(
            f"{s} {c['counted']} -> {c['blocks']}" for s, c in wrong.items()
        )
        logger.warning("%s", line)
        corrected.append(line)
    return corrected


def _span(block: PortBlock) -> str:
    return f"ports {block.first_port}-{block.last_port}"


def _where(block: PortBlock) -> dict:
    return {"host_id": block.host_id, "first_port": block.first_port, "last_port": block.last_port}
