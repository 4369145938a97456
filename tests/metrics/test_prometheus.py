"""Debian's Prometheus scrapes a running Berth: its own /metrics and a project's
/v1/projects/{ref}/metrics, each with its bearer token, and its query API returns the series.
Skipped, loudly, without /usr/bin/prometheus (scripts/prometheus installs it)."""

import os
import subprocess
import sys
import time

import httpx
import pytest

from metrics.collection import collect_all
from tests.api_helpers import join, make_org, make_user, token_for
from tests.metrics.helpers import TOKEN, host_with_projects
from tests.stack import ROOT, free_port_range, worker_env

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PROMETHEUS = os.environ.get("BERTH_PROMETHEUS", "/usr/bin/prometheus")


def wait_for(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        assert process.poll() is None, f"{process.args[0]} exited with {process.returncode}"
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"nothing answered at {url} within {seconds} s")


def query(prometheus: str, promql: str) -> list[dict]:
    reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def test_prometheus_scrapes_berth_and_a_project_and_answers_queries(tmp_path, shared_agent, version):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("no Prometheus (scripts/prometheus installs Debian's); the scrape test is SKIPPED")
    org, user = make_org(), make_user("scraper")
    join(user, org)
    api_token = token_for(user)
    _, (live, _) = host_with_projects(shared_agent, version, org)
    collect_all()

    web_port = free_port_range(2)
    prometheus_port = web_port + 1
    env = worker_env(tmp_path, BERTH_METRICS_TOKEN=TOKEN)
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{web_port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: berth
    metrics_path: /metrics
    authorization: {{credentials: "{TOKEN}"}}
    static_configs: [{{targets: ["127.0.0.1:{web_port}"]}}]
  - job_name: project
    metrics_path: /v1/projects/{live.ref}/metrics
    authorization: {{credentials: "{api_token}"}}
    static_configs: [{{targets: ["127.0.0.1:{web_port}"]}}]
"""
    )
    prometheus = None
    try:
        wait_for(f"http://127.0.0.1:{web_port}/metrics", web)
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{prometheus_port}"
        wait_for(f"{base}/-/ready", prometheus)
        wanted = {
            'up{job="berth"}': lambda v: v == 1,
            'up{job="project"}': lambda v: v == 1,
            'berth_host_port_blocks{job="berth",host="metered",state="leased"}': lambda v: v == 2,
            'berth_projects{job="berth",status="ACTIVE_HEALTHY",template="postgres"}': lambda v: v == 2,
            f'berth_project_database_size_bytes{{job="project",ref="{live.ref}"}}': lambda v: v > 1_000_000,
        }
        found: dict[str, float] = {}
        ends = time.monotonic() + 60
        while time.monotonic() < ends and len(found) < len(wanted):
            for promql, check in wanted.items():
                result = query(base, promql)
                if result and check(float(result[0]["value"][1])):
                    found[promql] = float(result[0]["value"][1])
            time.sleep(0.5)
        assert set(found) == set(wanted), (found, (tmp_path / "prometheus.log").read_text()[-2000:])
        targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert {t["labels"]["job"]: t["health"] for t in targets} == {"berth": "up", "project": "up"}
    finally:
        for process in (prometheus, web):
            if process is not None:
                process.terminate()
                process.wait(timeout=20)
