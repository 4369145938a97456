"""Per-host block counts (ports.models.BlockCount): kept by the database in the statement that
changes blocks, whatever writes them, read by placement and the hosts page instead of the
blocks, and corrected by the repair task when something wrote blocks past them."""

import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from unittest import mock

import pytest
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEntry
from operations.creation import create_project
from operations.placement import candidates
from ports.actions import (
    lease_ports,
    recheck_blocks,
    reconcile_ports,
    release_ports,
    repair_block_counts,
    sync_port_blocks,
)
from ports.models import BlockCount, BlockState, PortBlock
from templating.actions import sync_templates
from templating.models import TemplateVersion
from tests.factories import FakePortChecker, make_host, make_project, make_reported_host
from tests.stack import ROOT

pytestmark = pytest.mark.django_db

STATES = BlockCount.STATES


def counted(host) -> dict:
    row = BlockCount.objects.filter(host=host).values(*STATES).first()
    return row or dict.fromkeys(STATES, 0)


def actual(host) -> dict:
    return PortBlock.objects.filter(host=host).aggregate(**{s: Count("pk", filter=Q(state=s)) for s in STATES})


def assert_counts_match(*hosts):
    for host in hosts:
        assert counted(host) == actual(host), host.name


def test_the_counts_follow_every_write_that_changes_a_blocks_state():
    host = make_host(port_range_start=20000, port_range_end=20099, block_size=10)
    other = make_host(name="other", port_range_start=20000, port_range_end=20049, block_size=10)
    assert counted(host) == dict.fromkeys(STATES, 0)

    sync_port_blocks(host)
    sync_port_blocks(other)
    assert counted(host) == {"free": 10, "leased": 0, "cooling": 0, "blocked": 0}
    assert_counts_match(host, other)

    projects = [make_project(host=host) for _ in range(3)]
    # The lowest block is busy: it is marked blocked, and the lease takes the next one.
    for n, project in enumerate(projects):
        lease_ports(project, 1, checker=FakePortChecker(busy={20000} if n == 0 else ()))
    assert counted(host) == {"free": 6, "leased": 3, "cooling": 0, "blocked": 1}

    release_ports(projects[0])
    assert counted(host) == {"free": 6, "leased": 2, "cooling": 1, "blocked": 1}

    recheck_blocks(list(PortBlock.objects.filter(host=host, state=BlockState.BLOCKED)), checker=FakePortChecker())
    assert counted(host) == {"free": 7, "leased": 2, "cooling": 1, "blocked": 0}

    # A cooled-down block is taken again by a lease when no free one is left.
    PortBlock.objects.filter(host=host, state=BlockState.COOLING).update(released_at=timezone.now() - timedelta(days=1))
    for _ in range(8):
        lease_ports(make_project(host=host), 1, checker=FakePortChecker())
    assert counted(host) == {"free": 0, "leased": 10, "cooling": 0, "blocked": 0}

    # A shrunk range: the sync removes free blocks outside it (none here are free) and keeps leases.
    host.port_range_end = 20199
    host.save()
    sync_port_blocks(host)
    assert counted(host)["free"] == 10
    # Writes outside the verbs count too: a bulk state change and a delete.
    PortBlock.objects.filter(host=host, state=BlockState.FREE, first_port__gte=20150).update(state=BlockState.BLOCKED)
    PortBlock.objects.filter(host=host, state=BlockState.FREE, first_port__lt=20120).delete()
    assert counted(host) == {"free": 3, "leased": 10, "cooling": 0, "blocked": 5}
    assert_counts_match(host, other)
    assert counted(other) == {"free": 5, "leased": 0, "cooling": 0, "blocked": 0}

    # Deleting a host takes its counts with it and leaves other hosts' alone.
    other.delete()
    assert not BlockCount.objects.filter(host_id=other.pk).exists()
    assert_counts_match(host)


def test_a_write_that_changes_no_state_leaves_the_counts_alone():
    host = make_host(port_range_start=20000, port_range_end=20049, block_size=10)
    sync_port_blocks(host)
    before = counted(host)
    PortBlock.objects.filter(host=host).update(checked_at=timezone.now(), blocked_reason="")
    assert counted(host) == before == actual(host)


def test_the_repair_corrects_counts_that_drifted_from_the_blocks_and_says_so():
    host = make_host(name="drifted", port_range_start=20000, port_range_end=20099, block_size=10)
    fine = make_host(name="fine", port_range_start=20000, port_range_end=20049, block_size=10)
    sync_port_blocks(host)
    sync_port_blocks(fine)
    lease_ports(make_project(host=host), 1, checker=FakePortChecker())
    BlockCount.objects.filter(host=host).update(free=3, leased=40)

    corrected = repair_block_counts()

    assert corrected == ["drifted: block counts corrected: free 3 -> 9, leased 40 -> 1"]
    assert counted(host) == {"free": 9, "leased": 1, "cooling": 0, "blocked": 0}
    entry = AuditEntry.objects.get(action="ports.repair_counts")
    assert entry.detail == {
        "host": "drifted",
        "corrected": {"free": {"counted": 3, "blocks": 9}, "leased": {"counted": 40, "blocks": 1}},
    }
    assert repair_block_counts() == [], "counts that match are left alone"


def test_the_repair_creates_the_counts_row_a_host_lost():
    host = make_host(port_range_start=20000, port_range_end=20049, block_size=10)
    sync_port_blocks(host)
    BlockCount.objects.filter(host=host).delete()
    assert repair_block_counts([host]) == [f"{host.name}: block counts corrected: free 0 -> 5"]
    assert_counts_match(host)


def test_reconcile_repairs_the_counts_too():
    host = make_host(port_range_start=20000, port_range_end=20049, block_size=10)
    sync_port_blocks(host)
    BlockCount.objects.filter(host=host).update(blocked=7)
    result = reconcile_ports([host], checker=FakePortChecker())
    assert f"{host.name}: block counts corrected: blocked 7 -> 0" in result.changes
    assert_counts_match(host)


@pytest.fixture
def templates():
    with mock.patch("django_q.tasks.async_task"):
        sync_templates()


def test_placement_and_the_hosts_page_read_the_counts_not_the_blocks(templates, staff_client):
    """Counts that say a host is full make placement skip it and the hosts page show it full,
    whatever its blocks say: neither counts blocks. (The repair then puts them right.)"""
    full = make_reported_host(name="full", port_range_start=20000, port_range_end=20099, block_size=10)
    make_reported_host(name="roomy", port_range_start=21000, port_range_end=21019, block_size=10)
    sync_port_blocks(full)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    assert [h.name for h in candidates(project)] == ["full", "roomy"]

    BlockCount.objects.filter(host=full).update(leased=10, free=0)
    assert [h.name for h in candidates(project)] == ["roomy"]
    page = staff_client.get(reverse("dashboard:hosts")).content.decode()
    assert "0 free · 10 leased · 0 cooling · 0 blocked" in page

    repair_block_counts()
    assert [h.name for h in candidates(project)] == ["full", "roomy"]


def test_resting_blocks_are_not_free_until_their_cool_down_is_over(templates, settings):
    settings.BERTH_PORT_COOLDOWN = 300
    host = make_reported_host(name="only", port_range_start=20000, port_range_end=20009, block_size=10)
    holder = make_project(host=host, template_version=TemplateVersion.objects.latest_of("postgres"))
    lease_ports(holder, 1, checker=FakePortChecker())
    release_ports(holder)
    project = create_project(name="Orders", postgres_major=15, template="postgres")
    assert candidates(project) == [], "the only block rests"
    PortBlock.objects.filter(host=host).update(released_at=timezone.now() - timedelta(seconds=301))
    assert candidates(project) == [host]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_leases_and_releases_on_one_host_are_all_counted():
    from tests.ports.test_concurrency import run_together

    host = make_host(port_range_start=30000, port_range_end=30399, block_size=10)
    sync_port_blocks(host)
    held = [make_project(host=host) for _ in range(6)]
    for project in held:
        lease_ports(project, 1, checker=FakePortChecker())
    fresh = [make_project(host=host) for _ in range(10)]
    jobs = [lambda p=p: lease_ports(p, 1, checker=FakePortChecker()) for p in fresh]
    jobs += [lambda p=p: release_ports(p) for p in held]
    results = run_together(jobs)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert counted(host) == {"free": 24, "leased": 10, "cooling": 6, "blocked": 0} == actual(host)


def test_the_sqlite_triggers_keep_the_counts_as_the_postgresql_ones_do(tmp_path):
    """The embedded default (SQLite) has row triggers of its own: migrated from scratch, the
    same writes leave counts that match the blocks (the repair finds nothing to correct)."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/berth.sqlite3", "BERTH_VAR_DIR": str(tmp_path), "DEBUG": "1"}
    env = {**os.environ, **env}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    script = textwrap.dedent(
        """
        from hosts.models import RuntimeHost
        from ports.actions import lease_ports, recheck_blocks, release_ports, repair_block_counts, sync_port_blocks
        from ports.models import BlockCount, BlockState, PortBlock
        from projects.models import Project
        from templating.actions import sync_templates
        from templating.models import TemplateVersion
        from tests.factories import FakePortChecker

        sync_templates()
        version = TemplateVersion.objects.latest_of("postgres")
        host = RuntimeHost.objects.create(name="lite", agent_url="http://127.0.0.1:1", agent_token="t" * 20,
                                          port_range_start=20000, port_range_end=20099, block_size=10)
        sync_port_blocks(host)
        projects = [Project.objects.create(name=f"P{n}", postgres_major=15, template="postgres", host=host,
                                    template_version=version)
                    for n in range(3)]
        for n, project in enumerate(projects):
            lease_ports(project, 1, checker=FakePortChecker(busy={20000} if n == 0 else ()))
        release_ports(projects[1])
        recheck_blocks(list(PortBlock.objects.filter(state=BlockState.BLOCKED)), checker=FakePortChecker())
        PortBlock.objects.filter(first_port=20090).delete()
        row = BlockCount.objects.get(host=host)
        print(row.free, row.leased, row.cooling, row.blocked, repair_block_counts())
        """
    )
    for argv in (["migrate", "--noinput"], ["shell", "-c", script]):
        done = subprocess.run(
            [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "6 2 1 0 []"
