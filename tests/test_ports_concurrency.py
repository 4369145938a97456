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


def test_a_lease_that_waited_for_the_project_row_returns_the_block_the_other_lease_took():
    # The waiting lease read the project's blocks before the other one committed; its write
    # must read them again, or it claims a second block (refused by the database: an error).
    host = make_host(port_range_start=30000, port_range_end=30099, block_size=10)
    sync_port_blocks(host)
    project = make_project(host=host)
    leased, release = threading.Event(), threading.Event()
    results = {}

    def lease_and_hold():
        try:
            with transaction.atomic():
                results["first"] = lease_ports(project, 1, checker=FakePortChecker())
                leased.set()
                release.wait(timeout=20)
        finally:
            connection.close()

    def lease_again():
        try:
            results["second"] = lease_ports(project, 1, checker=FakePortChecker())
        except Exception as error:  # the assertion below reports it
            results["second"] = error
        finally:
            connection.close()

    holder, waiter = threading.Thread(target=lease_and_hold), threading.Thread(target=lease_again)
    holder.start()
    try:
        assert leased.wait(timeout=20), "the first lease never finished"
        waiter.start()
        deadline = time.monotonic() + 20
        while not waits_for_a_lock():
            assert time.monotonic() < deadline, "the second lease never waited for the project row"
            time.sleep(0.01)
    finally:
        release.set()
        holder.join(timeout=30)
    waiter.join(timeout=30)
    assert results["second"].pk == results["first"].pk, results["second"]
    assert list(PortBlock.objects.filter(project=project).values_list("first_port", flat=True)) == [30000]


def test_a_lease_that_waited_for_a_range_change_claims_inside_the_new_range():
    # The lease reads the range from the host row it share-locked, as it is once the change
    # committed, not from before it waited.
    from hosts.models import RuntimeHost

    host = make_host(port_range_start=40000, port_range_end=40049, block_size=10)
    sync_port_blocks(host)
    project = make_project(host=host)
    saved, commit = threading.Event(), threading.Event()
    results = {}

    def change_range():
        try:
            with transaction.atomic():
                moved = RuntimeHost.objects.get(pk=host.pk)
                moved.port_range_start = 40020
                moved.save()
                saved.set()
                commit.wait(timeout=20)
        finally:
            connection.close()

    def lease():
        try:
            results["block"] = lease_ports(project, 1, checker=FakePortChecker())
        except Exception as error:  # the assertion below reports it
            results["block"] = error
        finally:
            connection.close()

    changer, leaser = threading.Thread(target=change_range), threading.Thread(target=lease)
    changer.start()
    try:
        assert saved.wait(timeout=20), "the range change never got written"
        leaser.start()
        deadline = time.monotonic() + 20
        while not waits_for_a_lock():
            assert time.monotonic() < deadline, "the lease never waited for the host row"
            time.sleep(0.01)
    finally:
        commit.set()
        changer.join(timeout=30)
    leaser.join(timeout=30)
    assert results["block"].first_port == 40020, results["block"]


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
