import tomllib

import jwt
import pytest
import yaml
from django.db import connection

from templating.render import RenderError, render_project
from templating.secrets import generate_project_secrets
from tests.factories import make_runtime_project
from tests.stack import ROOT

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("major", "image"), [(15, "supabase/postgres:15.8.1.085"), (17, "supabase/postgres:17.6.1.132")]
)
def test_it_renders_supabase_with_the_requested_major_and_its_image(supabase, major, image):
    project = make_runtime_project(supabase, postgres_major=major, first_port=21000)
    rendered = render_project(project, supabase)

    config = tomllib.loads(rendered.files["supabase/config.toml"].decode())
    assert config["db"]["major_version"] == major
    assert config["project_id"] == project.ref
    assert (config["api"]["port"], config["db"]["port"], config["db"]["shadow_port"]) == (21000, 21001, 21002)
    assert config["db"]["pooler"]["port"] == 21008 and config["inbucket"]["smtp_port"] == 21005

    compose = yaml.safe_load(rendered.files["docker-compose.yml"])
    assert compose["services"]["db"]["image"] == image
    assert compose["services"]["db"]["ports"] == ["21001:${POSTGRES_PORT}"]
    assert compose["services"]["kong"]["ports"] == ["21000:8000/tcp"]
    # Many projects share a Docker host: every container carries the project's ref.
    assert all(project.ref in service["container_name"] for service in compose["services"].values())
    for service in ("db", "auth", "storage", "studio", "analytics", "vector", "supavisor", "realtime", "imgproxy"):
        assert "healthcheck" in compose["services"][service], service

    runtime = tomllib.loads(rendered.files["runtime.toml"].decode())
    assert runtime == {"driver": "docker", "compose_file": "docker-compose.yml"}


@pytest.mark.parametrize("major", [15, 17])
def test_it_renders_postgres_for_the_process_driver_with_the_requested_major(postgres, major):
    project = make_runtime_project(postgres, postgres_major=major, first_port=22000)
    rendered = render_project(project, postgres)
    runtime = tomllib.loads(rendered.files["runtime.toml"].decode())
    assert runtime == {
        "driver": "process",
        "postgres": {
            "major": major,
            "port": 22000,
            "password": project.secrets["postgres_password"],
            "init_sql": "supabase.sql",
        },
    }
    assert rendered.policies == {"runtime.toml": "managed", "supabase.sql": "managed", "README.md": "seed"}
    # Copied as the template holds it: the same SQL for every project.
    assert rendered.files["supabase.sql"] == (ROOT / "runtimes" / "postgres" / "supabase.sql").read_bytes()


def test_postgres_serves_tls_with_the_projects_certificate_when_it_has_one(postgres):
    from templating.secrets import generate_tls_secrets

    project = make_runtime_project(postgres, postgres_major=15, first_port=22000)
    project.secrets.update(generate_tls_secrets(project.ref, "db.example.test"))
    runtime = tomllib.loads(render_project(project, postgres).files["runtime.toml"].decode())
    assert runtime["postgres"]["tls_cert"] == project.secrets["tls_cert"] + ""
    assert runtime["postgres"]["tls_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_it_keeps_the_config_toml_comments_and_layout(supabase):
    project = make_runtime_project(supabase, postgres_major=15)
    rendered = render_project(project, supabase).files["supabase/config.toml"].decode()
    source = supabase.file_bytes()["supabase/config.toml"].decode()
    assert "# The database major version to use. This has to be the same as your remote database's." in rendered
    assert '# [db.vault]\n# secret_key = "env(SECRET_VALUE)"' in rendered
    # Only the set values differ: same number of lines, comments in place.
    changed = [(a, b) for a, b in zip(source.splitlines(), rendered.splitlines(), strict=True) if a != b]
    assert ("major_version = 17", "major_version = 15") in changed
    assert all(not a.lstrip().startswith("#") for a, _ in changed)


def test_it_renders_byte_identical_files_every_time(supabase):
    project = make_runtime_project(supabase, postgres_major=17)
    first = render_project(project, supabase)
    second = render_project(type(project).objects.get(pk=project.pk), supabase)
    assert first.files == second.files and first.digests == second.digests


def test_it_fills_the_env_file_with_the_projects_secrets(supabase):
    project = make_runtime_project(supabase)
    env = render_project(project, supabase).files[".env"].decode()
    secrets = project.secrets
    for key in ("postgres_password", "jwt_secret", "anon_key", "service_role_key", "dashboard_password"):
        assert f"={secrets[key]}\n" in env
    assert "your-super-secret" not in env and "{{" not in env


def test_it_refuses_to_render_a_major_the_template_does_not_support(supabase):
    project = make_runtime_project(supabase, postgres_major=16)
    with pytest.raises(RenderError, match=r"Postgres 16 is not supported \(supported: \[15, 17\]\)"):
        render_project(project, supabase)


def test_it_refuses_to_render_without_a_port_block_big_enough(supabase, postgres):
    project = make_runtime_project(postgres)
    with pytest.raises(RenderError, match=r"needs 10 ports; .* block holds 1"):
        render_project(project, supabase)


def test_it_names_the_missing_secret_when_a_project_has_none(supabase):
    project = make_runtime_project(supabase)
    project.secrets = {}
    with pytest.raises(RenderError, match=r"\.env: 'dict object' has no attribute 'postgres_password'"):
        render_project(project, supabase)


def test_it_signs_anon_and_service_role_keys_as_hs256_jwts_with_the_jwt_secret():
    secrets = generate_project_secrets(now=1_700_000_000)
    for key, role in (("anon_key", "anon"), ("service_role_key", "service_role")):
        assert jwt.get_unverified_header(secrets[key])["alg"] == "HS256"
        claims = jwt.decode(secrets[key], secrets["jwt_secret"], algorithms=["HS256"], options={"verify_exp": False})
        assert claims == {"role": role, "iss": "supabase", "iat": 1_700_000_000, "exp": secrets["jwt_exp"]}
    assert secrets["jwt_exp"] - secrets["jwt_iat"] >= 5 * 365 * 24 * 3600
    assert len(secrets["vault_enc_key"]) == 32 and len(secrets["secret_key_base"]) >= 64
    assert generate_project_secrets()["postgres_password"] != generate_project_secrets()["postgres_password"]


def test_it_stores_project_secrets_encrypted_at_rest(supabase):
    project = make_runtime_project(supabase)
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM projects_project WHERE id = %s", [project.pk])
        (stored,) = cursor.fetchone()
    assert project.secrets["jwt_secret"] not in stored and project.secrets["postgres_password"] not in stored


def test_files_that_read_secrets_are_private_and_bind_mounted_ones_are_not(supabase, postgres):
    def private(version):
        return render_project(make_runtime_project(version, postgres_major=15), version).private

    assert private(postgres) == {"runtime.toml"}
    assert ".env" in private(supabase)
    assert not {"volumes/api/kong.yml", "volumes/logs/vector.yml", "docker-compose.yml"} & private(supabase)
