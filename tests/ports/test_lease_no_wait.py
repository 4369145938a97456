"""A lease never queues behind another worker's claim: SKIP LOCKED passes over a held block."""

import threading
import time
from contextlib import contextmanager

import pytest
from django.db import connection, transaction

from ports.actions import lease_ports, sync_port_blocks
from ports.models import PortBlock
from tests.factories import FakePortChecker, make_host, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BOUND_S = 3.0  # a lease takes milliseconds; one that waits for the holder takes 8 s


@contextmanager
def claim_held_by_another_worker(block):
    """Another worker in the middle of its claiming transaction, on its own connection, holding `block`."""
    held, release = threading.Event(), threading.Event()

    def hold_claim():
        try:
            with transaction.atomic():
                PortBlock.objects.select_for_update().get(pk=block.pk)
                held.set()
                release.wait(timeout=8)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_claim)
    holder.start()
    try:
        assert held.wait(timeout=10), "the holder never locked the block"
        yield
    finally:
        release.set()
        holder.join(timeout=20)


def timed_lease(project, slots, checker):
    started = time.monotonic()
    block = lease_ports(project, slots, checker=checker)
    took = time.monotonic() - started
    assert took < BOUND_S, f"the lease waited {took:.1f}s behind the held claim"
    return block


def test_a_lease_takes_another_block_while_a_worker_holds_a_claim_on_the_lowest():
    host = make_host(port_range_start=21000, port_range_end=21099, block_size=10)
    sync_port_blocks(host)
    lowest = PortBlock.objects.filter(host=host).order_by("first_port").first()
    with claim_held_by_another_worker(lowest):
        block = timed_lease(make_project(host=host), 5, FakePortChecker())
    assert block.pk != lowest.pk
    assert block.first_port == lowest.first_port + 10


def test_a_lease_that_found_a_block_busy_claims_past_a_held_claim_too():
    # After a busy block the lease claims again, in a statement of its own: SKIP LOCKED there too.
    host = make_host(port_range_start=21000, port_range_end=21099, block_size=10)
    sync_port_blocks(host)
    second = PortBlock.objects.get(host=host, first_port=21010)
    with claim_held_by_another_worker(second):
        block = timed_lease(make_project(host=host), 5, FakePortChecker(busy={21000}))
    assert block.first_port == 21020
