"""Property: random create/delete/busy/range-change sequences never yield an invalid lease."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hosts.models import PORT_MAX, PORT_MIN, RangeConflict
from ports.actions import lease_ports, release_ports, sync_port_blocks
from ports.errors import PortsBusy, PortsExhausted, TooManySlots
from ports.models import BlockState, PortBlock
from projects.models import Status
from tests.factories import FakePortChecker, make_host, make_project, make_template_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

ranges = st.tuples(
    st.integers(PORT_MIN, PORT_MAX - 1),  # start
    st.integers(1, 80),  # length
    st.integers(1, 8),  # block size
).filter(lambda r: r[0] + r[2] - 1 <= PORT_MAX)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(1, 3) | st.just(9)),  # slots needed (9: more than any block)
        st.tuples(st.just("delete"), st.integers(0, 50)),  # which live project
        st.tuples(st.just("busy"), st.integers(0, 80)),  # a port offset a foreign process takes
        st.tuples(st.just("cool"), st.just(0)),  # every cool-down ends
        # Moves the range by up to 40 ports, so old and new blocks overlap and misalign.
        st.tuples(st.just("range"), st.tuples(st.integers(-40, 40), st.integers(1, 80), st.integers(1, 8))),
        st.tuples(st.just("sync"), st.just(0)),
    ),
    max_size=25,
)


def host_range(start, length, size):
    return {
        "port_range_start": start,
        "port_range_end": min(PORT_MAX, start + max(length, size) - 1),
        "block_size": size,
    }


@override_settings(BERTH_PORT_COOLDOWN=300)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=ranges, steps=steps)
# A range moved up after its only lease was released: the old low blocks must not be leased.
@example(initial=(40000, 50, 10), steps=[("create", 1), ("delete", 0), ("range", (20, 50, 10)), ("create", 1)])
def test_it_never_yields_overlapping_or_out_of_range_leases(initial, steps):
    host = make_host(**host_range(*initial))
    template_version = make_template_version()
    checker = FakePortChecker()
    live = []
    for action, arg in steps:
        if action == "create":
            project = make_project(host=host, template_version=template_version)
            resting = set(
                PortBlock.objects.filter(host=host, state=BlockState.COOLING)
                .exclude(pk__in=PortBlock.objects.cooled().values("pk"))
                .values_list("pk", flat=True)
            )
            try:
                block = lease_ports(project, arg, checker=checker)
            except TooManySlots:
                assert arg > host.block_size
            except PortsExhausted:
                assert arg <= host.block_size
                reusable = (
                    PortBlock.objects.inside_range(host).holding(arg).removable().exclude(state=BlockState.BLOCKED)
                )
                assert not reusable.exists(), "exhausted while a block was free"
            except PortsBusy:
                assert arg <= host.block_size
            else:
                assert block.pk not in resting, "a block was handed out during its cool-down"
                assert block.last_port - block.first_port + 1 >= arg
                assert not checker.busy.intersection(block.ports)
                live.append(project)
        elif action == "delete" and live:
            project = live.pop(arg % len(live))
            project.status = Status.REMOVED
            project.save(update_fields=["status"])
            release_ports(project)
        elif action == "busy":
            checker.busy.add(min(PORT_MAX, host.port_range_start + arg))
        elif action == "cool":
            PortBlock.objects.filter(host=host, state=BlockState.COOLING).update(
                released_at=timezone.now() - timedelta(seconds=301)
            )
        elif action == "range":
            shift, length, size = arg
            start = min(max(PORT_MIN, host.port_range_start + shift), PORT_MAX - size + 1)
            for field, value in host_range(start, length, size).items():
                setattr(host, field, value)
            try:
                with transaction.atomic():
                    host.save()
            except RangeConflict:
                host.refresh_from_db()
        elif action == "sync":
            sync_port_blocks(host)
        assert_valid(host, live)


def assert_valid(host, live):
    blocks = list(PortBlock.objects.filter(host=host).order_by("first_port"))
    for block in blocks:
        assert PORT_MIN <= block.first_port <= block.last_port <= PORT_MAX
    for before, after in zip(blocks, blocks[1:], strict=False):
        assert before.last_port < after.first_port, f"{before} overlaps {after}"
    leased = [b for b in blocks if b.state == BlockState.LEASED]
    for block in leased:
        assert host.port_range_start <= block.first_port and block.last_port <= host.port_range_end
    assert sorted(b.project_id for b in leased) == sorted(p.pk for p in live)
