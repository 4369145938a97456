"""Every major Berth offers runs for real: a project is created and served on PostgreSQL 15
(Debian's), 16 and 17 (scripts/postgres installs them into pgbin/), through a real worker and
a real agent started from the checkout with no setting about where PostgreSQL lives. A host
without those binaries (a fresh machine) offers only what it has, everywhere a major is chosen.
"""

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from operations.creation import create_project
from projects.models import Project, Status
from tests.api_helpers import api_as, join, make_org, make_user
from tests.stack import Worker, agent_host, connect, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MAJORS = (15, 16, 17)


@pytest.fixture
def worker(tmp_path):
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=90, BERTH_AGENT_CALL_DEADLINE=60)
    yield worker
    worker.stop()


def test_a_project_runs_on_each_major_the_checkout_serves(agent_factory, worker):
    host = agent_host(agent_factory(), block_size=1, blocks=len(MAJORS))
    assert set(MAJORS) <= set(host.postgres_versions), (
        f"the agent found {host.postgres_versions}; run ./scripts/postgres to install PostgreSQL 16 and 17"
    )
    projects = {
        major: create_project(name=f"On {major}", postgres_major=major, template="postgres") for major in MAJORS
    }
    for major, project in projects.items():
        wait_for(
            lambda p=project: Project.objects.get(pk=p.pk).status == Status.ACTIVE_HEALTHY,
            timeout=120,
            what=f"the project on {major} to be healthy",
        )
        project.refresh_from_db()
        with connect(project) as conn:
            version, wal_level = conn.execute(
                "select current_setting('server_version_num')::int, current_setting('wal_level')"
            ).fetchone()
            assert version // 10000 == major
            # New projects can be upgraded by logical replication without a restart first.
            assert wal_level == "logical"
            # These ship with every served major (pg_stat_statements preloaded), and the template's
            # SQL made them in `extensions`, on the search path, as a Supabase project has them.
            installed = dict(conn.execute("select extname, extnamespace::regnamespace::text from pg_extension"))
            names = ("pgcrypto", "uuid-ossp", "pg_stat_statements")
            assert {name: installed.get(name) for name in names} == dict.fromkeys(names, "extensions")
            assert conn.execute("select count(*) >= 0 from pg_stat_statements").fetchone() == (True,)
            assert conn.execute("select gen_random_uuid() <> uuid_generate_v4()").fetchone() == (True,)


def test_a_host_without_the_installed_binaries_offers_only_the_majors_it_has(
    agent_factory, tmp_path, staff_client, postgres
):
    # A fresh machine: scripts/postgres never ran, so the search path holds nothing.
    agent = agent_factory(env={"BERTH_AGENT_POSTGRES_PATH": str(tmp_path / "nothing-here" / "*" / "bin")})
    host = agent_host(agent, name="fresh")
    assert host.postgres_versions == [15]

    html = staff_client.get(reverse("dashboard:create_project")).content.decode()
    assert '<option value="15"' in html
    assert not any(f'<option value="{major}"' in html for major in (14, 16, 17, 18))

    with pytest.raises(CommandError) as refused:
        call_command("projects", "create", "Orders", "--postgres", "17")
    assert "supported: 15" in str(refused.value)

    user = make_user("ada")
    org = make_org()
    join(user, org)
    body = {"name": "Orders", "organization_id": org.slug, "db_pass": "A-Strong-Password-42", "region": "us-east-1"}
    reply = api_as(user).post("/v1/projects", {**body, "postgres_engine": "16"})
    assert reply.status_code == 422, reply.content
    assert "Postgres 16" in json.loads(reply.content)["message"]
    assert "15" in json.loads(reply.content)["message"]
    assert not Project.objects.exists()
