"""Regions (docs/architecture.md, Management API: Regions): hosts carry an optional region
label; a project asking for region R is placed on hosts labelled R or unlabelled, never on a
host of another region, even when no host of R can take it."""

import pytest

from operations.placement import NoHost, candidates, place_project
from tests.factories import make_project, make_reported_host

pytestmark = pytest.mark.django_db


def names(hosts) -> set[str]:
    return {host.name for host in hosts}


def test_a_project_of_a_region_goes_to_that_region_or_unlabelled_hosts(postgres):
    make_reported_host(name="eu-1", region="eu")
    make_reported_host(name="us-1", region="us")
    make_reported_host(name="anywhere", region="")
    project = make_project(template_version=postgres, region="eu")
    assert names(candidates(project)) == {"eu-1", "anywhere"}


def test_a_project_without_a_region_may_go_anywhere(postgres):
    make_reported_host(name="eu-1", region="eu")
    make_reported_host(name="anywhere", region="")
    assert names(candidates(make_project(template_version=postgres, region=""))) == {"eu-1", "anywhere"}


def test_it_never_falls_back_to_another_region_when_its_own_cannot_take_the_project(postgres):
    make_reported_host(name="eu-1", region="eu", accepts_projects=False)
    make_reported_host(name="us-1", region="us")
    project = make_project(template_version=postgres, region="eu")
    assert candidates(project) == []
    with pytest.raises(NoHost, match="in region 'eu' \\(or unlabelled\\)"):
        place_project(project, deadline=1)
    project.refresh_from_db()
    assert project.host is None
