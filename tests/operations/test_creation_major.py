"""Creation checks the Postgres major against the chosen host as well as the template."""

import pytest
from django.core.exceptions import ValidationError

from operations.creation import create_project
from projects.models import Project
from tests.dashboard_helpers import register_template
from tests.factories import make_reported_host

pytestmark = pytest.mark.django_db


def test_it_refuses_a_major_the_template_supports_but_the_chosen_host_cannot_run(tmp_path):
    register_template(tmp_path)  # supports 14-18
    east = make_reported_host(name="east")  # reports 15 and 16
    make_reported_host(name="west", capabilities={"driver": "process", "postgres_versions": [17]})
    with pytest.raises(ValidationError) as raised:
        create_project(name="Orders", postgres_major=17, template="postgres", host=east)
    assert "Postgres 17 cannot run on host east" in str(raised.value)
    assert "supported there: 15, 16" in str(raised.value)
    assert not Project.objects.exists()


def test_it_creates_on_the_chosen_host_a_major_it_runs(tmp_path, reported_host):
    register_template(tmp_path)
    project = create_project(name="Orders", postgres_major=16, template="postgres", host=reported_host)
    assert project.host == reported_host
