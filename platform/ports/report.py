"""What `manage.py ports report` shows: per-host block counts and anomalies."""

from dataclasses import dataclass

from django.db.models import F, Q

from hosts.models import RuntimeHost
from ports.models import BlockCounts, BlockState, PortBlock, block_layout
from projects.models import Status


@dataclass(frozen=True)
class HostReport:
    host: RuntimeHost
    counts: BlockCounts  # blocks inside the host's range
    unlaid: int  # blocks of the layout without a row yet (a lease or reconcile creates them)
    stale: int  # blocks outside the current layout (range or block size changed)


def host_report(host: RuntimeHost) -> HostReport:
    layout = set(block_layout(host.port_range_start, host.port_range_end, host.block_size))
    existing = set(PortBlock.objects.filter(host=host).values_list("first_port", "last_port"))
    return HostReport(
        host=host,
        counts=PortBlock.objects.inside_range(host).counts(),
        unlaid=len(layout - existing),
        stale=PortBlock.objects.outside_layout(host).count(),
    )


def anomalies(hosts) -> list[str]:
    """Everything that should not be: each line names the host, the ports and the project."""
    found = []
    leased = PortBlock.objects.filter(host__in=hosts, state=BlockState.LEASED).select_related("host", "project")
    for block in leased.filter(project__status=Status.REMOVED):
        found.append(f"{_where(block)} is leased to deleted project {block.project.ref}")
    for block in leased.filter(Q(project__host__isnull=True) | ~Q(project__host=F("host"))):
        found.append(f"{_where(block)} is leased to {block.project.ref}, which is placed on another host")
    for host in hosts:
        for block in host.stranded_blocks().select_related("host", "project"):
            found.append(f"{_where(block)} is leased to {block.project.ref} but lies outside the host's range")
        found.extend(_overlaps(host))
    return found


def _overlaps(host: RuntimeHost) -> list[str]:
    """Overlapping blocks of one host (PostgreSQL forbids them; SQLite relies on the layout code)."""
    found, reach = [], None
    for block in PortBlock.objects.filter(host=host).select_related("host").order_by("first_port"):
        if reach is not None and block.first_port <= reach.last_port:
            found.append(f"{_where(block)} overlaps ports {reach.first_port}-{reach.last_port}")
        if reach is None or block.last_port > reach.last_port:
            reach = block
    return found


def _where(block: PortBlock) -> str:
    return f"{block.host.name}: ports {block.first_port}-{block.last_port}"
