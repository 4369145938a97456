"""Berth's answers against the platform's recorded ones (tests/api/fixtures/recorded/, copied from
the Supabase CLI's end-to-end fixtures): every key the platform answers with is there, with the
same JSON type, for every endpoint Berth serves that has a recording."""

import json
from pathlib import Path

import pytest

from agent.api import SettingsReply
from api.main import api
from orgs.models import Role
from ports.models import BlockState, PortBlock
from projects.models import DatabaseSettings, Status
from templating.secrets import generate_project_secrets
from tests.api_helpers import api_as, join, make_org, make_user
from tests.factories import make_host, make_project

pytestmark = pytest.mark.django_db

RECORDED = Path(__file__).parent / "fixtures" / "recorded"
PASSWORD = "Correct-Horse-Battery-42"


def recorded(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def mismatches(expected, got, where="$") -> list[str]:
    """Where `got` lacks a key of `expected` or holds another JSON type (null on either side
    matches anything: the platform's optional fields)."""
    if expected is None or got is None:
        return []
    if json_type(expected) != json_type(got):
        return [f"{where}: {json_type(got)}, recorded {json_type(expected)}"]
    if isinstance(expected, dict):
        found = []
        for key, value in expected.items():
            if key not in got:
                found.append(f"{where}.{key}: missing")
            else:
                found += mismatches(value, got[key], f"{where}.{key}")
        return found
    if isinstance(expected, list):
        # Each recorded element must match one of Berth's (lists mix shapes: api-keys).
        found = []
        for index, item in enumerate(expected):
            tries = [mismatches(item, candidate, f"{where}[{index}]") for candidate in got]
            if not got:
                found.append(f"{where}: empty, recorded {len(expected)} elements")
            elif all(tries):
                found += min(tries, key=len)
        return found
    return []


def served() -> set[str]:
    names = set()
    for prefix, router in api._routers:
        for path, view in router.path_operations.items():
            for operation in view.operations:
                for method in operation.methods:
                    full = (prefix + path).replace("{ref}", "__PROJECT_REF__")
                    names.add(f"{method}_v1{full.replace('/', '_').replace('-', '_')}")
    return names


class FakeAgent:
    def __call__(self, host, *, deadline):
        return self

    def query(self, ref, spec, deadline_s=None):
        return [{"?column?": 1}]

    def apply_settings(self, ref, request, deadline_s=None):
        return SettingsReply(values=dict(request.parameters))

    def bans(self, ref, unban=()):
        return []


@pytest.fixture
def world(postgres, monkeypatch):
    import hosts.agents

    monkeypatch.setattr(hosts.agents, "client_for", FakeAgent())
    owner = make_user("owner")
    org = make_org("Acme")
    join(owner, org, Role.OWNER)
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15]})
    project = make_project(
        organization=org,
        template_version=postgres,
        host=host,
        status=Status.ACTIVE_HEALTHY,
        secrets=generate_project_secrets(),
    )
    PortBlock.objects.create(host=host, first_port=20010, last_port=20019, state=BlockState.LEASED, project=project)
    # The parameters the platform's recording had set, so GET has them to answer with.
    DatabaseSettings.objects.create(
        project=project,
        postgres_config={
            "shared_buffers": "256MB",
            "max_connections": 100,
            "statement_timeout": "8s",
            "effective_cache_size": "768MB",
        },
    )
    return {"api": api_as(owner), "org": org, "project": project}


# Each recorded endpoint Berth serves: how to ask it (method, path, body).
CALLS = {
    "GET_v1_organizations": ("get", "/v1/organizations", None),
    "POST_v1_organizations": ("post", "/v1/organizations", {"name": "Test Org"}),
    "GET_v1_projects": ("get", "/v1/projects", None),
    "GET_v1_projects___PROJECT_REF__": ("get", "/v1/projects/{ref}", None),
    "POST_v1_projects": (
        "post",
        "/v1/projects",
        {"name": "cli-e2e-test", "organization_slug": "{org}", "db_pass": PASSWORD, "postgres_engine": "15"},
    ),
    "GET_v1_projects___PROJECT_REF___api_keys": ("get", "/v1/projects/{ref}/api-keys?reveal=true", None),
    "GET_v1_projects___PROJECT_REF___config_storage": ("get", "/v1/projects/{ref}/config/storage", None),
    "GET_v1_projects___PROJECT_REF___config_database_pooler": (
        "get",
        "/v1/projects/{ref}/config/database/pooler",
        None,
    ),
    "POST_v1_projects___PROJECT_REF___database_query": (
        "post",
        "/v1/projects/{ref}/database/query",
        {"query": "select 1"},
    ),
    "DELETE_v1_projects___PROJECT_REF__": ("delete", "/v1/projects/{ref}", None),
    "GET_v1_projects___PROJECT_REF___config_database_postgres": (
        "get",
        "/v1/projects/{ref}/config/database/postgres",
        None,
    ),
    "PUT_v1_projects___PROJECT_REF___config_database_postgres": (
        "put",
        "/v1/projects/{ref}/config/database/postgres",
        {"effective_cache_size": "768MB", "max_connections": 100, "shared_buffers": "256MB", "statement_timeout": "8s"},
    ),
    "GET_v1_projects___PROJECT_REF___ssl_enforcement": ("get", "/v1/projects/{ref}/ssl-enforcement", None),
    "PUT_v1_projects___PROJECT_REF___ssl_enforcement": (
        "put",
        "/v1/projects/{ref}/ssl-enforcement",
        {"requestedConfig": {"database": True}},
    ),
    "GET_v1_projects___PROJECT_REF___network_restrictions": ("get", "/v1/projects/{ref}/network-restrictions", None),
    "POST_v1_projects___PROJECT_REF___network_restrictions_apply": (
        "post",
        "/v1/projects/{ref}/network-restrictions/apply",
        {"dbAllowedCidrs": ["0.0.0.0/0"], "dbAllowedCidrsV6": []},
    ),
    "POST_v1_projects___PROJECT_REF___network_bans_retrieve": (
        "post",
        "/v1/projects/{ref}/network-bans/retrieve",
        None,
    ),
    "DELETE_v1_projects___PROJECT_REF___network_bans": (
        "delete",
        "/v1/projects/{ref}/network-bans",
        {"ipv4_addresses": ["1.2.3.4"], "requester_ip": False},
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_berths_answer_has_every_recorded_key_with_its_type(world, name):
    method, path, body = CALLS[name]
    ref, org = world["project"].ref, world["org"].slug
    path = path.format(ref=ref, org=org)
    if body is not None:
        body = json.loads(json.dumps(body).replace("{org}", org))
    client = world["api"]
    response = getattr(client, method)(path, body) if body is not None else getattr(client, method)(path)
    expected = recorded(name)
    assert response.status_code == expected["status"], response.content
    assert mismatches(expected["body"], response.json()) == []


def test_every_recorded_endpoint_berth_serves_is_compared():
    stored = {path.stem for path in RECORDED.glob("*.json")}
    assert stored & served() <= set(CALLS)
    assert set(CALLS) <= stored


def test_the_comparison_finds_a_missing_key_and_a_wrong_type():
    expected = {"a": 1, "b": [{"c": "x"}], "d": None}
    assert mismatches(expected, {"a": "1", "b": [{"c": "x"}], "d": 5}) == ["$.a: string, recorded number"]
    assert mismatches(expected, {"a": 1, "b": [{}]}) == ["$.b[0].c: missing", "$.d: missing"]
