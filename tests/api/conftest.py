"""The API tests' people: alice, and Acme, the organization she belongs to with `alice_role`
(owner unless a module says otherwise by overriding that fixture). And a real PostgreSQL whose
databases are new Supabase projects' (runtimes/postgres/supabase.sql), with the API reaching it
through the agent's own query code: for the tests of what the Management API reads from a
project's database (advisors, generated types)."""

import itertools

import msgspec
import psycopg
import pytest

import hosts.agents
from agent.api import FileSpec
from agent.client import AgentError
from agent.query import QueryFailed, run_query
from orgs.models import Role
from ports.models import BlockState, PortBlock
from projects.models import Status
from templating.secrets import generate_project_secrets
from tests.agent_fixtures import AgentPool
from tests.api_helpers import join, make_org, make_user
from tests.factories import make_host, make_project
from tests.stack import PORT_BASE, ROOT, free_port_range


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alice_role():
    return Role.OWNER


@pytest.fixture
def org(alice, alice_role):
    org = make_org("Acme")
    join(alice, org, alice_role)
    return org


PASSWORD = "correct-horse-battery"
TEMPLATE_DB = "supabase_new_project"
_names = itertools.count()


class Cluster:
    def __init__(self, port: int):
        self.port = port

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD, dbname=dbname, autocommit=True
        )

    def new_database(self, sql: str = "") -> str:
        """A database as a new project's, then `sql` run in it as its owner's migration would."""
        name = f"advised_{next(_names)}"
        with self.connect() as conn:
            conn.execute(f"create database {name} template {TEMPLATE_DB}")
        if sql:
            with self.connect(name) as conn:
                conn.execute(sql)
        return name


@pytest.fixture(scope="module")
def supabase_cluster():
    """A process-driver cluster whose `postgres` database ran the template's SQL, and a
    template database made the same way that each test copies."""
    pool = AgentPool()
    try:
        agent = pool.start()
        client, port = agent.client(deadline=90), free_port_range(1, PORT_BASE + 660)
        runtime = (
            f'driver = "process"\n[postgres]\nmajor = 15\nport = {port}\npassword = "{PASSWORD}"\n'
            'init_sql = "supabase.sql"\n'
        )
        init_sql = (ROOT / "runtimes" / "postgres" / "supabase.sql").read_bytes()
        client.put_files("advised", [FileSpec("runtime.toml", runtime.encode()), FileSpec("supabase.sql", init_sql)])
        client.up("advised")
        found = Cluster(port)
        with found.connect() as conn:
            conn.execute(f"create database {TEMPLATE_DB}")
        with found.connect(TEMPLATE_DB) as conn:
            conn.execute(init_sql.decode())
        yield found
    finally:
        pool.close()


class LocalAgent:
    """The agent's query call, run here on the test cluster's database named by `dbname`."""

    def __init__(self, cluster: Cluster):
        self.cluster, self.dbname, self.specs, self.error = cluster, "postgres", [], None

    def __call__(self, host, *, deadline):
        return self

    def query(self, ref, spec, deadline_s=None):
        self.specs.append(spec)
        if self.error:
            raise self.error
        here = msgspec.structs.replace(spec, port=self.cluster.port, dbname=self.dbname, password=PASSWORD)
        try:
            return run_query(here, "127.0.0.1", deadline_s).rows
        except QueryFailed as failed:
            raise AgentError(f"POST /query: {failed.message}", code="query_failed", status=400) from None


@pytest.fixture
def database_agent(monkeypatch, supabase_cluster):
    local = LocalAgent(supabase_cluster)
    monkeypatch.setattr(hosts.agents, "client_for", local)
    return local


@pytest.fixture
def owned_project(alice, postgres):
    org = make_org("Acme")
    join(alice, org)
    host = make_host()
    found = make_project(
        organization=org,
        template_version=postgres,
        host=host,
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )
    PortBlock.objects.create(host=host, first_port=20010, last_port=20019, state=BlockState.LEASED, project=found)
    return found
