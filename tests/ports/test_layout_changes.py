"""A host's range or block size changing under its blocks (docs/architecture.md, Ports: Layout):
a range change that would leave a leased block outside the range is refused, at either end;
sync_port_blocks removes blocks that left the layout only once nothing holds them, so a
released block that is still cooling stays until its cool-down is over."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts.models import RangeConflict
from ports.actions import release_ports, sync_port_blocks
from ports.models import BlockState, PortBlock
from tests.factories import make_host, make_port_block, make_project

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("start", "end"), [(20500, 20999), (20000, 20495)], ids=["start-past-it", "end-before-it"])
def test_a_range_that_would_leave_a_lease_outside_it_is_refused(start, end):
    host = make_host(port_range_start=20000, port_range_end=20999, block_size=10)
    make_port_block(make_project(host=host), first_port=20490)
    host.port_range_start, host.port_range_end = start, end
    with pytest.raises(RangeConflict, match="20490-20499"):
        host.save()
    host.refresh_from_db()
    assert (host.port_range_start, host.port_range_end) == (20000, 20999)


def test_a_sync_keeps_a_block_still_cooling_outside_the_new_layout_and_removes_it_once_rested(settings):
    settings.BERTH_PORT_COOLDOWN = 300
    host = make_host(port_range_start=20000, port_range_end=20099, block_size=10)
    project = make_project(host=host)
    make_port_block(project, first_port=20050)
    release_ports(project)
    host.block_size = 20  # 20050-20059 is no longer a block of the layout
    host.save()

    sync_port_blocks(host)
    cooling = PortBlock.objects.get(host=host, first_port=20050)
    assert (cooling.state, cooling.last_port) == (BlockState.COOLING, 20059)

    PortBlock.objects.filter(pk=cooling.pk).update(released_at=timezone.now() - timedelta(seconds=301))
    sync_port_blocks(host)
    assert not PortBlock.objects.filter(host=host, first_port=20050).exists()
    assert PortBlock.objects.filter(host=host, first_port=20040, last_port=20059).exists()
