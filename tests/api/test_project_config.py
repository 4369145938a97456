"""GET /v1/projects/{ref}/api-keys, /config/storage and /config/database/pooler."""

import jwt
import pytest

from audit.models import AuditEntry
from orgs.models import Role
from tests.api_helpers import api_as, make_org
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_role():
    return Role.READ_ONLY


def test_it_gives_the_legacy_keys_signed_with_the_projects_jwt_secret(alice, org, postgres):
    from templating.secrets import generate_project_secrets

    project = make_project(organization=org, template_version=postgres, secrets=generate_project_secrets())
    response = api_as(alice).get(f"/v1/projects/{project.ref}/api-keys", reveal="true")
    assert response.status_code == 200
    keys = response.json()
    # A read_only member: the public keys alone.
    assert [(k["name"], k["type"]) for k in keys] == [("anon", "legacy"), ("default", "publishable")]
    for key in keys[:1]:
        claims = jwt.decode(key["api_key"], project.secrets["jwt_secret"], algorithms=["HS256"])
        assert claims["role"] == key["name"]
        assert claims["iss"] == "supabase"
    revealed = AuditEntry.objects.get(action="token.use", project=project)
    assert revealed.detail["action"] == "project.reveal_api_keys"
    assert project.secrets["anon_key"] not in str(revealed.detail)


def test_nobody_reads_another_organizations_keys(alice, org, postgres):
    theirs = make_project(organization=make_org("Other"), template_version=postgres)
    assert api_as(alice).get(f"/v1/projects/{theirs.ref}/api-keys").status_code == 404
    assert not AuditEntry.objects.filter(action="token.use").exists()


def test_the_pooler_config_is_what_the_cli_link_accepts(alice, org, postgres, settings):
    settings.BERTH_DATABASE_DOMAIN = "db.example.test"
    project = make_project(organization=org, template_version=postgres)
    response = api_as(alice).get(f"/v1/projects/{project.ref}/config/database/pooler")
    assert response.status_code == 200
    (pooler,) = response.json()
    # The pooler of the project's host (none yet: the default name); the CLI's link turns the
    # transaction-mode port 6543 into 5432 (session mode) for its own commands.
    host = "pooler.db.example.test"
    assert pooler == {
        "identifier": project.ref,
        "database_type": "PRIMARY",
        "db_user": f"postgres.{project.ref}",
        "db_host": host,
        "db_port": 6543,
        "db_name": "postgres",
        "connection_string": f"postgresql://postgres.{project.ref}:[YOUR-PASSWORD]@{host}:6543/postgres",
        "connectionString": f"postgresql://postgres.{project.ref}:[YOUR-PASSWORD]@{host}:6543/postgres",
        "pool_mode": "transaction",
        "default_pool_size": 15,
        "max_client_conn": 200,
        "is_using_scram_auth": True,
    }


def test_storage_config_follows_the_template(alice, org, postgres, supabase):
    plain = make_project(organization=org, template_version=postgres)
    full = make_project(organization=org, template_version=supabase)
    api = api_as(alice)
    plain_config = api.get(f"/v1/projects/{plain.ref}/config/storage").json()
    assert plain_config["fileSizeLimit"] == 0
    assert plain_config["features"]["imageTransformation"] == {"enabled": False}
    assert plain_config["capabilities"] == {"list_v2": False, "iceberg_catalog": False}
    # Every field the Supabase CLI's schema requires, or its link drops the pooler settings.
    assert set(plain_config) == {
        "fileSizeLimit",
        "features",
        "capabilities",
        "external",
        "migrationVersion",
        "databasePoolMode",
    }
    assert set(plain_config["features"]) == {
        "imageTransformation",
        "s3Protocol",
        "purgeCache",
        "icebergCatalog",
        "vectorBuckets",
    }
    full_config = api.get(f"/v1/projects/{full.ref}/config/storage").json()
    assert full_config["fileSizeLimit"] == 50 * 1024 * 1024
    assert full_config["capabilities"]["list_v2"] is True


def test_config_of_another_organizations_project_is_404(alice, org, postgres):
    theirs = make_project(organization=make_org("Other"), template_version=postgres)
    api = api_as(alice)
    assert api.get(f"/v1/projects/{theirs.ref}/config/storage").status_code == 404
    assert api.get(f"/v1/projects/{theirs.ref}/config/database/pooler").status_code == 404
