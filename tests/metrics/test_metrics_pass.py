"""The metrics pass (one agent call per host, samples kept for a bounded time), Berth's own
/metrics and a project's /v1/projects/{ref}/metrics, read from what the pass and every
process wrote to the database."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from metrics.collection import collect_all
from metrics.models import FleetCount, HostSample, ProjectSample
from telemetry.models import Counter
from telemetry.record import flush
from tests.api_helpers import api_as, join, make_org, make_user
from tests.metrics.helpers import TOKEN, host_with_projects
from tests.stack import ROOT, worker_env

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_the_pass_samples_each_reachable_runtime_with_rates_and_forgets_old_samples(shared_agent, version):
    host, (live, dead) = host_with_projects(shared_agent, version)
    stale = ProjectSample.objects.create(
        project=live,
        at=timezone.now() - timedelta(hours=25),
        connections=0,
        database_bytes=1,
        xact_total=0,
        rows_read_total=0,
        rows_written_total=0,
    )

    assert collect_all() == 1
    assert collect_all() == 1

    samples = list(ProjectSample.objects.filter(project=live).order_by("at"))
    assert stale.pk not in [s.pk for s in samples], "samples past the retention are deleted"
    first, second = samples
    assert first.tps is None, "a first sample has no rate"
    assert second.tps is not None and second.tps > 0
    assert second.database_bytes > 1_000_000 and second.cache_hit_ratio > 0
    assert not ProjectSample.objects.filter(project=dead).exists(), "a runtime the agent could not read gets no sample"
    assert HostSample.objects.filter(host=host).count() == 2
    assert HostSample.objects.filter(host=host).last().projects == 2
    assert list(FleetCount.objects.values_list("status", "template", "count")) == [("ACTIVE_HEALTHY", "postgres", 2)]


def test_metrics_is_off_without_a_token_and_refuses_a_wrong_one(client, settings):
    settings.BERTH_METRICS_TOKEN = None
    assert client.get("/metrics").status_code == 404
    settings.BERTH_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_metrics_serves_the_fleet_hosts_queue_agent_calls_and_api_counts(client, settings, shared_agent, version):
    settings.BERTH_METRICS_TOKEN = TOKEN
    org = make_org()
    user = make_user("reader")
    join(user, org)
    host, (live, _) = host_with_projects(shared_agent, version, org)
    collect_all()
    api = api_as(user)
    assert api.get(f"/v1/projects/{live.ref}").status_code == 200
    flush()

    reply = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert reply.status_code == 200
    assert reply["Content-Type"].startswith("text/plain; version=")
    text = reply.content.decode()
    assert f'berth_projects{{revision="{version.revision}",status="ACTIVE_HEALTHY",template="postgres"}} 2.0' in text
    assert 'berth_host_port_blocks{host="metered",state="leased"} 2.0' in text
    assert 'berth_hosts{state="up"} 1.0' in text
    assert "berth_queue_depth 0.0" in text
    assert 'berth_agent_call_duration_seconds_count{endpoint="POST /v1/metrics",host="metered"} 1.0' in text
    assert "berth_api_requests_total 1.0" in text
    assert 'berth_rollouts{state="running"} 0.0' in text


@pytest.mark.django_db(transaction=True)
def test_events_counted_by_other_processes_add_up_in_this_ones_metrics(client, settings, tmp_path):
    """Several web and worker processes: what each flushes is summed in the database, so any
    process answers /metrics with the whole count."""
    settings.BERTH_METRICS_TOKEN = TOKEN
    script = (
        "from telemetry.record import count, flush; count('berth_reaper_actions_total', action='timed_out'); flush()"
    )
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=worker_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert Counter.objects.get(name="berth_reaper_actions_total").value == 2
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()
    assert 'berth_reaper_actions_total{action="timed_out"} 2.0' in text


def test_a_projects_metrics_are_served_to_its_organization_only(shared_agent, version):
    org, other = make_org("Acme"), make_org("Other")
    member, outsider = make_user("member"), make_user("outsider")
    join(member, org)
    join(outsider, other)
    _, (live, dead) = host_with_projects(shared_agent, version, org)
    collect_all()

    reply = api_as(member).get(f"/v1/projects/{live.ref}/metrics")
    assert reply.status_code == 200
    text = reply.content.decode()
    assert f'berth_project_database_size_bytes{{ref="{live.ref}"}}' in text
    assert f'berth_project_transactions_total{{ref="{live.ref}"}}' in text
    assert f'berth_project_sample_age_seconds{{ref="{live.ref}"}}' in text

    never = api_as(member).get(f"/v1/projects/{dead.ref}/metrics").content.decode()
    assert f'berth_project_sample_age_seconds{{ref="{dead.ref}"}} -1.0' in never
    assert api_as(outsider).get(f"/v1/projects/{live.ref}/metrics").status_code == 404
