"""Many workers leasing at once, each thread on its own PostgreSQL connection."""

import threading
import time
from unittest import mock

import pytest
from django.db import connection, transaction

from ports.actions import lease_ports, sync_port_blocks
from ports.models import BlockState, PortBlock
from tests.factories import FakePortChecker, make_host, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run_together(jobs):
    """Run each job in its own thread, all released at once; returns results (or exceptions) in order."""
    barrier = threading.Barrier(len(jobs))
    results = [None] * len(jobs)

    def worker(i, job):
        try:
            barrier.wait()
            results[i] = job()
        except Exception as error:  # the assertion below reports it
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def assert_no_overlaps(host):
    blocks = list(PortBlock.objects.filter(host=host).order_by("first_port"))
    for before, after in zip(blocks, blocks[1:], strict=False):
        assert before.last_port < after.first_port


def test_it_gives_16_concurrent_workers_one_distinct_block_each():
    host = make_host(port_range_start=30000, port_range_end=30199, block_size=10)
    projects = [make_project(host=host) for _ in range(16)]
    results = run_together([lambda p=p: lease_ports(p, 5, checker=FakePortChecker()) for p in projects])
    assert not [r for r in results if isinstance(r, Exception)], results
    leased = PortBlock.objects.filter(host=host, state=BlockState.LEASED)
    assert sorted(leased.values_list("project_id", flat=True)) == sorted(p.pk for p in projects)
    assert sorted(r.pk for r in results) == sorted(leased.values_list("pk", flat=True))
    assert all(30000 <= r.first_port and r.last_port <= 30199 for r in results)
    assert_no_overlaps(host)


def test_it_gives_two_concurrent_leases_for_one_project_one_block():
    project = make_project(host=make_host())
    results = run_together([lambda: lease_ports(project, 1, checker=FakePortChecker())] * 2)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert results[0].pk == results[1].pk
    assert PortBlock.objects.filter(state=BlockState.LEASED).count() == 1


def waits_for_a_lock() -> bool:
    """Whether some connection to the test database waits for a row lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def after_a_wait(hold, act, waiter: str):
    """Run `hold` in a transaction in one thread, then `act` in another until it waits for a
    row lock, then let `hold` commit. Returns (what hold returned, what act returned or the
    exception it raised)."""
    held, release = threading.Event(), threading.Event()
    results = {}

    def holder():
        try:
            with transaction.atomic():
                results["held"] = hold()
                held.set()
                release.wait(timeout=20)
        finally:
            connection.close()

    def actor():
        try:
            results["acted"] = act()
        except Exception as error:  # the caller's assertion reports it
            results["acted"] = error
        finally:
            connection.close()

    first, second = threading.Thread(target=holder), threading.Thread(target=actor)
    first.start()
    try:
        assert held.wait(timeout=20), "the holding transaction never got its locks"
        second.start()
        deadline = time.monotonic() + 20
        while not waits_for_a_lock():
            assert time.monotonic() < deadline, f"{waiter} never waited for a row lock"
            time.sleep(0.01)
    finally:
        release.set()
        first.join(timeout=30)
    second.join(timeout=30)
    return results["held"], results["acted"]


def test_a_lease_that_waited_for_the_project_row_returns_the_block_the_other_lease_took():
    # The waiting lease read the project's blocks before the other one committed; its write
    # must read them again, or it claims a second block (refused by the database: an error).
    host = make_host(port_range_start=30000, port_range_end=30099, block_size=10)
    sync_port_blocks(host)
    project = make_project(host=host)
    first, second = after_a_wait(
        lambda: lease_ports(project, 1, checker=FakePortChecker()),
        lambda: lease_ports(project, 1, checker=FakePortChecker()),
        "the second lease",
    )
    assert second.pk == first.pk, second
    assert list(PortBlock.objects.filter(project=project).values_list("first_port", flat=True)) == [30000]


def test_a_lease_that_waited_for_a_range_change_claims_inside_the_new_range():
    # The lease reads the range from the host row it share-locked, as it is once the change
    # committed, not from before it waited.
    from hosts.models import RuntimeHost

    host = make_host(port_range_start=40000, port_range_end=40049, block_size=10)
    sync_port_blocks(host)
    project = make_project(host=host)

    def change_range():
        moved = RuntimeHost.objects.get(pk=host.pk)
        moved.port_range_start = 40020
        moved.save()

    _, block = after_a_wait(change_range, lambda: lease_ports(project, 1, checker=FakePortChecker()), "the lease")
    assert block.first_port == 40020, block


def test_saving_a_host_outside_a_transaction_holds_its_row_lock_from_the_check_to_the_write():
    """A lease share-locks the host row to read its range; the save must hold the row from the
    stranded-lease check until the new range is written, so no lease lands in between."""
    from django.db import OperationalError

    from hosts.models import RuntimeHost

    host = make_host(port_range_start=20000, port_range_end=20099, block_size=10)
    check = RuntimeHost.check_range_keeps_leases
    seen = []

    def lease_meanwhile():
        # What a lease does first, from another connection: share-lock the host row.
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT id FROM hosts_runtimehost WHERE id = %s FOR SHARE NOWAIT", [host.pk])
            seen.append("lease got in")
        except OperationalError:
            seen.append("lease waited")
        finally:
            connection.close()

    def checking(instance):
        check(instance)
        thread = threading.Thread(target=lease_meanwhile)
        thread.start()
        thread.join(timeout=30)

    host.port_range_end = 20049
    with mock.patch.object(RuntimeHost, "check_range_keeps_leases", autospec=True, side_effect=checking):
        host.save()
    assert seen == ["lease waited"]
    host.refresh_from_db()
    assert host.port_range_end == 20049
