"""`manage.py ports report` and `manage.py ports reconcile`."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEntry
from ports.actions import lease_ports
from ports.models import BlockState, PortBlock
from projects.models import Status
from tests.factories import FakePortChecker, make_host, make_project

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def run(*args):
    out, err = StringIO(), StringIO()
    call_command("ports", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def checker(monkeypatch):
    fake = FakePortChecker()
    monkeypatch.setattr("ports.actions.checker_for", lambda host: fake)
    return fake


def test_it_reports_each_host_by_state(settings):
    settings.BERTH_PORT_COOLDOWN = 300
    host = make_host(name="alpha", port_range_start=40000, port_range_end=40049, block_size=10)
    make_host(name="beta")
    lease_ports(make_project(host=host), 1, checker=FakePortChecker(busy={40000}))
    out, _ = run("report")
    lines = out.splitlines()
    assert lines[0].split() == ["host", "range", "size", "free", "leased", "cooling", "blocked", "unlaid", "stale"]
    assert lines[1].split() == ["alpha", "40000-40049", "10", "3", "1", "0", "1", "0", "0"]
    assert lines[2].split() == ["beta", "20000-20999", "10", "0", "0", "0", "0", "100", "0"]
    assert "No anomalies." in out


def test_the_report_warns_of_a_range_in_the_kernels_ephemeral_ports():
    ephemeral = {"driver": "process", "ephemeral_ports": [32768, 60999]}
    make_host(name="alpha", capabilities=ephemeral, port_range_start=20000, port_range_end=20999)
    make_host(name="beta", capabilities=ephemeral, port_range_start=30000, port_range_end=39999)
    out, _ = run("report")
    assert "warning: beta: ports 32768-39999 of the range lie in the kernel's ephemeral port range" in out
    assert "warning: alpha" not in out
    assert "No anomalies." in out


def test_it_fails_the_report_on_a_lease_of_a_deleted_project():
    host = make_host(name="alpha")
    project = make_project(host=host)
    block = lease_ports(project, 1, checker=FakePortChecker())
    project.status = Status.REMOVED
    project.save()
    out = StringIO()
    with pytest.raises(CommandError, match="1 port lease anomalies"):
        call_command("ports", "report", stdout=out)
    assert (
        f"alpha: ports {block.first_port}-{block.last_port} is leased to deleted project {project.ref}"
        in out.getvalue()
    )


def test_it_reports_a_lease_on_another_host_than_its_project():
    project = make_project(host=make_host(name="alpha"))
    lease_ports(project, 1, checker=FakePortChecker())
    project.host = make_host(name="beta")
    project.save()
    with pytest.raises(CommandError):
        run("report", "--host", "alpha")


def test_it_refuses_an_unknown_host():
    with pytest.raises(CommandError, match="No such host: nowhere"):
        run("report", "--host", "nowhere")


def test_it_reconciles_and_says_what_it_changed(checker):
    host = make_host(name="alpha", port_range_start=40000, port_range_end=40049, block_size=10)
    gone = make_project(host=host)
    lease_ports(gone, 1, checker=checker)
    gone.status = Status.REMOVED
    gone.save()
    PortBlock.objects.filter(host=host, first_port__in=[40010, 40020]).update(
        state=BlockState.BLOCKED, blocked_reason="in use"
    )
    checker.busy = {40025}
    host.port_range_end = 40069
    host.save()

    out, _ = run("reconcile")

    assert out.splitlines() == [
        "changed: alpha: released ports 40000-40009 of deleted project " + gone.ref,
        "changed: alpha: laid out 2 new blocks",
        "changed: alpha: ports 40010-40019 is free again",
    ]
    states = dict(host.port_blocks.values_list("first_port", "state"))
    assert states[40000] == BlockState.COOLING
    assert (states[40010], states[40020], states[40060]) == (BlockState.FREE, BlockState.BLOCKED, BlockState.FREE)
    assert set(AuditEntry.objects.values_list("action", "actor_label")) == {
        ("ports.release", "manage.py ports reconcile"),
        ("ports.recheck", "manage.py ports reconcile"),
    }
    assert run("reconcile")[0] == "Nothing to change.\n"


def test_it_fails_reconcile_when_a_host_cannot_be_checked(monkeypatch):
    from ports.errors import PortCheckFailed

    class Down:
        def taken(self, host, ports):
            raise PortCheckFailed(f"could not check ports on {host.name}: agent down")

    monkeypatch.setattr("ports.actions.checker_for", lambda host: Down())
    host = make_host(name="alpha")
    lease_ports(make_project(host=host), 1, checker=FakePortChecker(busy={20000}))
    err = StringIO()
    with pytest.raises(CommandError, match="1 hosts could not be reconciled"):
        call_command("ports", "reconcile", stdout=StringIO(), stderr=err)
    assert "problem: alpha: could not check ports on alpha: agent down" in err.getvalue()
