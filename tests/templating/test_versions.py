import pytest

from templating.versions import UnsupportedPostgresVersion, check_postgres_major, supported_majors
from tests.factories import make_host

pytestmark = pytest.mark.django_db


def test_it_returns_the_image_that_runs_a_supported_major(supabase):
    assert check_postgres_major(supabase, 17).image == "supabase/postgres:17.6.1.132"
    assert check_postgres_major(supabase, 15).image == "supabase/postgres:15.8.1.085"


def test_it_refuses_an_unsupported_major_with_the_supported_list(supabase):
    with pytest.raises(UnsupportedPostgresVersion) as raised:
        check_postgres_major(supabase, 16)
    assert raised.value.supported == [15, 17]
    assert "Postgres 16 is not supported by template supabase r1; supported: 15, 17" in raised.value.messages[0]


def test_it_narrows_a_process_template_to_the_hosts_local_majors(postgres):
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15, 16]})
    assert supported_majors(postgres, host) == [15, 16]
    assert check_postgres_major(postgres, 16, host=host).local_major == 16
    with pytest.raises(UnsupportedPostgresVersion) as raised:
        check_postgres_major(postgres, 17, host=host)
    assert raised.value.supported == [15, 16]
    assert "(local PostgreSQL: 15, 16); supported there: 15, 16" in raised.value.messages[0]


def test_it_refuses_every_version_on_a_host_whose_driver_cannot_run_the_template(supabase):
    host = make_host(capabilities={"driver": "process", "postgres_versions": [15, 17]})
    assert supported_majors(supabase, host) == []
    with pytest.raises(UnsupportedPostgresVersion, match="runs the process driver, but template supabase needs docker"):
        check_postgres_major(supabase, 15, host=host)


def test_it_lets_a_docker_host_run_every_image_the_template_names(supabase):
    host = make_host(capabilities={"driver": "docker", "postgres_versions": []})
    assert supported_majors(supabase, host) == [15, 17]
