"""A lease never queues behind another worker's claim: SKIP LOCKED passes over a held block."""

import threading
import time

import pytest
from django.db import connection, transaction

from ports.actions import lease_ports, sync_port_blocks
from ports.models import PortBlock
from tests.factories import FakePortChecker, make_host, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BOUND_S = 3.0  # a lease takes milliseconds; one that waits for the holder takes 8 s


def test_a_lease_takes_another_block_while_a_worker_holds_a_claim_on_the_lowest():
    host = make_host(port_range_start=21000, port_range_end=21099, block_size=10)
    sync_port_blocks(host)
    lowest = PortBlock.objects.filter(host=host).order_by("first_port").first()
    held, release = threading.Event(), threading.Event()

    def hold_claim():
        # Another worker in the middle of its claiming transaction, on its own connection.
        try:
            with transaction.atomic():
                PortBlock.objects.select_for_update().get(pk=lowest.pk)
                held.set()
                release.wait(timeout=8)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_claim)
    holder.start()
    try:
        assert held.wait(timeout=10), "the holder never locked the block"
        started = time.monotonic()
        block = lease_ports(make_project(host=host), 5, checker=FakePortChecker())
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(timeout=20)
    assert took < BOUND_S, f"the lease waited {took:.1f}s behind the held claim"
    assert block.pk != lowest.pk
    assert block.first_port == lowest.first_port + 10
