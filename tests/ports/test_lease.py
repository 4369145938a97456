"""lease_ports, release_ports and the block layout, on PostgreSQL."""

from datetime import timedelta
from unittest import mock

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts.models import RangeConflict
from ports.actions import lease_ports, release_ports, sync_port_blocks
from ports.errors import NotLeasable, PortsBusy, PortsExhausted, TooManySlots
from ports.models import BlockState, PortBlock
from projects.models import Project, Status
from tests.factories import FakePortChecker, make_host, make_port_block, make_project, make_template_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def free():
    return FakePortChecker()


def test_it_leases_the_lowest_block_inside_the_host_range(free):
    host = make_host(port_range_start=30000, port_range_end=30099, block_size=10)
    block = lease_ports(make_project(host=host), 3, checker=free)
    assert (block.first_port, block.last_port, block.state) == (30000, 30009, BlockState.LEASED)
    assert block.checked_at is not None
    assert free.asked == [list(range(30000, 30010))]


def test_it_gives_a_project_that_has_a_lease_the_same_block_without_asking_again(free):
    project = make_project(host=make_host())
    first = lease_ports(project, 3, checker=free)
    assert lease_ports(project, 3, checker=free).pk == first.pk
    assert len(free.asked) == 1
    assert PortBlock.objects.filter(state=BlockState.LEASED).count() == 1


def test_it_rejects_a_template_that_needs_more_slots_than_a_block_holds(free):
    host = make_host(block_size=5)
    with pytest.raises(TooManySlots, match=f"needs 6 port slots.*{host.name} holds 5"):
        lease_ports(make_project(host=host), 6, checker=free)


def test_it_refuses_a_deleted_project_and_an_unplaced_one(free):
    with pytest.raises(NotLeasable, match="deleted"):
        lease_ports(make_project(host=make_host(), status=Status.REMOVED), 1, checker=free)
    with pytest.raises(NotLeasable, match="not placed"):
        lease_ports(make_project(), 1, checker=free)


def test_it_names_the_host_and_its_counts_when_exhausted(free, settings):
    settings.BERTH_PORT_COOLDOWN = 300
    host = make_host(name="tiny", port_range_start=40000, port_range_end=40039, block_size=10)
    leased = [make_project(host=host) for _ in range(3)]
    for project in leased:
        lease_ports(project, 1, checker=FakePortChecker(busy={40000}))  # 40000-40009 ends up blocked
    release_ports(leased[0])
    still_busy = FakePortChecker(busy={40000})
    with pytest.raises(PortsExhausted) as caught:
        lease_ports(make_project(host=host), 1, checker=still_busy)
    message = str(caught.value)
    assert "tiny" in message
    assert "2 leased, 1 cooling, 1 blocked, 0 free" in message
    assert still_busy.asked == [list(range(40000, 40010))], "the blocked block was asked about again"


def test_it_rechecks_blocked_blocks_before_declaring_the_host_full(free):
    # A range filled by short-lived client sockets: every block was found busy once.
    host = make_host(name="busy", port_range_start=20000, port_range_end=20019, block_size=10)
    for first in (20000, 20010):
        PortBlock.objects.create(
            host=host, first_port=first, last_port=first + 9, state=BlockState.BLOCKED, checked_at=timezone.now()
        )
    block = lease_ports(make_project(host=host), 1, checker=free)
    assert (block.first_port, block.state) == (20000, BlockState.LEASED)
    assert PortBlock.objects.get(host=host, first_port=20010).state == BlockState.FREE


def test_it_reuses_a_released_block_only_after_the_cooldown(free, settings):
    settings.BERTH_PORT_COOLDOWN = 300
    host = make_host(port_range_start=40000, port_range_end=40019, block_size=10)
    gone = make_project(host=host)
    block = lease_ports(gone, 1, checker=free)
    release_ports(gone)
    assert lease_ports(make_project(host=host), 1, checker=free).first_port == 40010
    with pytest.raises(PortsExhausted, match="1 cooling"):
        lease_ports(make_project(host=host), 1, checker=free)

    PortBlock.objects.filter(pk=block.pk).update(released_at=timezone.now() - timedelta(seconds=301))
    reused = lease_ports(make_project(host=host), 1, checker=free)
    assert (reused.pk, reused.released_at) == (block.pk, None)


def test_it_releases_into_the_cooldown_idempotently(free):
    project = make_project(host=make_host())
    block = lease_ports(project, 1, checker=free)
    released = release_ports(project)
    assert (released.pk, released.state, released.last_project_ref) == (block.pk, BlockState.COOLING, project.ref)
    assert release_ports(project) is None


def test_it_marks_a_busy_block_blocked_and_leases_the_next(free):
    host = make_host(port_range_start=40000, port_range_end=40099, block_size=10)
    block = lease_ports(make_project(host=host), 2, checker=FakePortChecker(busy={40004}))
    assert block.first_port == 40010
    busy = PortBlock.objects.get(host=host, first_port=40000)
    assert (busy.state, busy.project, busy.blocked_reason) == (
        BlockState.BLOCKED,
        None,
        "in use by another process: 40004",
    )
    assert busy.checked_at is not None


def test_it_gives_up_after_a_bounded_number_of_busy_blocks():
    host = make_host(port_range_start=40000, port_range_end=40999, block_size=10)
    everything = FakePortChecker(busy=range(40000, 41000))
    with pytest.raises(PortsBusy, match=host.name):
        lease_ports(make_project(host=host), 1, checker=everything)
    assert len(everything.asked) == 8
    assert PortBlock.objects.filter(state=BlockState.BLOCKED).count() == 8


def test_it_leases_nothing_when_the_check_never_finished_and_checks_again_next_time(free):
    class Unreachable:
        def taken(self, host, ports):
            raise ConnectionError("agent down")

    project = make_project(host=make_host())
    with pytest.raises(ConnectionError):
        lease_ports(project, 1, checker=Unreachable())
    assert not PortBlock.objects.filter(project=project).exists(), "an unchecked claim was left behind"
    block = lease_ports(project, 1, checker=free)
    assert block.checked_at is not None
    assert len(free.asked) == 1


def test_it_checks_a_lease_left_unchecked_before_handing_it_out(free):
    project = make_project(host=make_host())
    unchecked = make_port_block(project)
    PortBlock.objects.filter(pk=unchecked.pk).update(checked_at=None)
    assert lease_ports(project, 1, checker=free).pk == unchecked.pk
    assert free.asked == [list(unchecked.ports)]
    assert PortBlock.objects.get(pk=unchecked.pk).checked_at is not None


def test_it_does_not_lay_out_a_full_host_again_on_each_refusal(free):
    host = make_host(port_range_start=40000, port_range_end=40019, block_size=10)
    for _ in range(2):
        lease_ports(make_project(host=host), 1, checker=free)
    refused = make_project(host=host)
    with mock.patch("ports.actions.sync_port_blocks") as sync, pytest.raises(PortsExhausted):
        lease_ports(refused, 1, checker=free)
    assert not sync.called
    widened = make_host(port_range_start=41000, port_range_end=41009, block_size=10)
    lease_ports(make_project(host=widened), 1, checker=free)
    widened.port_range_end = 41019
    widened.save()
    assert lease_ports(make_project(host=widened), 1, checker=free).first_port == 41010


def test_it_lays_out_blocks_aligned_to_the_range_without_passing_its_end():
    host = make_host(port_range_start=65500, port_range_end=65535, block_size=10)
    assert sync_port_blocks(host).created == 3
    assert list(host.port_blocks.values_list("first_port", "last_port")) == [
        (65500, 65509),
        (65510, 65519),
        (65520, 65529),
    ]
    assert sync_port_blocks(host).created == 0


def test_it_refuses_a_range_change_that_would_leave_a_lease_outside(free):
    host = make_host(port_range_start=40000, port_range_end=40019, block_size=10)
    lease_ports(make_project(host=host), 1, checker=FakePortChecker(busy={40000}))
    host.port_range_end = 40009
    with pytest.raises(RangeConflict, match="40010-40019"):
        host.save()


def test_it_never_leases_outside_a_shrunk_range_and_removes_blocks_left_behind(free):
    host = make_host(port_range_start=40000, port_range_end=40049, block_size=10)
    lease_ports(make_project(host=host), 1, checker=free)
    host.port_range_end = 40019
    host.save()
    assert lease_ports(make_project(host=host), 1, checker=free).first_port == 40010
    with pytest.raises(PortsExhausted):
        lease_ports(make_project(host=host), 1, checker=free)
    assert host.port_blocks.count() == 2


def test_it_changes_the_block_size_around_a_lease_without_overlap(free, settings):
    settings.BERTH_PORT_COOLDOWN = 0
    host = make_host(port_range_start=40000, port_range_end=40039, block_size=10)
    kept = make_project(host=host)
    lease_ports(kept, 1, checker=free)
    host.block_size = 20
    host.save()
    sync_port_blocks(host)
    # The lease stays where it is; the new layout's block over it waits until it is released.
    assert list(host.port_blocks.values_list("first_port", "last_port", "state")) == [
        (40000, 40009, BlockState.LEASED),
        (40020, 40039, BlockState.FREE),
    ]
    release_ports(kept)
    sync_port_blocks(host)
    assert list(host.port_blocks.values_list("first_port", "last_port")) == [(40000, 40019), (40020, 40039)]


def test_the_database_forbids_overlapping_blocks_on_one_host():
    host = make_host()
    PortBlock.objects.create(host=host, first_port=40000, last_port=40009)
    with pytest.raises(IntegrityError), transaction.atomic():
        PortBlock.objects.create(host=host, first_port=40005, last_port=40014)
    PortBlock.objects.create(host=make_host(), first_port=40005, last_port=40014)


def test_it_leases_valid_ports_once_project_ids_pass_3000(free, settings):
    settings.BERTH_PORT_COOLDOWN = 0
    host = make_host(port_range_start=64000, port_range_end=65535, block_size=20)
    template_version = make_template_version()
    # Thousands of projects that came and went: created in bulk, deleted (their ids stay used).
    Project.objects.bulk_create(
        Project(
            name=f"gone {n}",
            postgres_major=15,
            template="postgres",
            template_version=template_version,
            status=Status.REMOVED,
        )
        for n in range(3000)
    )
    churn = [make_project(host=host, template_version=template_version) for _ in range(200)]
    for project in churn:
        lease_ports(project, 7, checker=free)
        release_ports(project)
    survivor = make_project(host=host, template_version=template_version)
    assert survivor.pk > 3000
    block = lease_ports(survivor, 7, checker=free)
    assert 64000 <= block.first_port and block.last_port <= 65535
    assert block.last_port - block.first_port + 1 == 20


def test_it_leases_a_new_block_in_one_locking_statement_and_one_write(free, django_assert_num_queries):
    # SAVEPOINT (the test's transaction stands in for BEGIN), the locks and the claim, the
    # write, RELEASE SAVEPOINT: a lease is not many round trips.
    host = make_host(port_range_start=30000, port_range_end=30099, block_size=10)
    sync_port_blocks(host)
    project = make_project(host=host)
    with django_assert_num_queries(4):
        block = lease_ports(project, 3, checker=free)
    assert (block.first_port, block.project_id) == (30000, project.pk)
    with django_assert_num_queries(4):
        assert lease_ports(project, 3, checker=free).pk == block.pk


def test_it_takes_the_longest_cooled_block_in_the_same_statement_when_none_is_free(
    free, settings, django_assert_num_queries
):
    settings.BERTH_PORT_COOLDOWN = 300
    host = make_host(port_range_start=30000, port_range_end=30029, block_size=10)
    sync_port_blocks(host)
    long_ago = timezone.now() - timedelta(seconds=900)
    for first, released in ((30000, long_ago + timedelta(seconds=60)), (30010, long_ago), (30020, timezone.now())):
        PortBlock.objects.filter(host=host, first_port=first).update(state=BlockState.COOLING, released_at=released)
    project = make_project(host=host)
    with django_assert_num_queries(4):
        block = lease_ports(project, 1, checker=free)
    assert block.first_port == 30010


def test_it_never_claims_outside_a_shrunk_range_after_a_busy_block(free):
    # The claim after a busy block is a statement of its own: it keeps to the range too, also
    # while blocks a shrink left outside are not yet removed.
    host = make_host(port_range_start=40000, port_range_end=40049, block_size=10)
    sync_port_blocks(host)
    host.port_range_end = 40019
    host.save()
    busy = FakePortChecker(busy={40000, 40010})
    with pytest.raises(PortsExhausted):
        lease_ports(make_project(host=host), 1, checker=busy)
    assert [ports[0] for ports in busy.asked] == [40000, 40010, 40000]
