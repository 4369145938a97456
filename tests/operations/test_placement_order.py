"""Placement's order and trust (docs/architecture.md, Hosts: Placement): hosts whose last contact
failed go last, then most free blocks first; a host whose agent answered within
BERTH_HOST_INFO_MAX_AGE seconds and has not failed since is not asked again; a project holding a
block keeps its host."""

from datetime import timedelta

import pytest
from django.utils import timezone

from operations.placement import candidates, knows_it_answers, unplace_if_unfit
from tests.factories import make_port_block, make_project, make_reported_host

pytestmark = pytest.mark.django_db


def test_a_host_whose_last_contact_failed_goes_last_whatever_its_free_blocks(postgres):
    make_reported_host(name="failing", port_range_end=20999, last_error="connection refused")  # 100 blocks
    make_reported_host(name="small", port_range_end=20049)  # 5 blocks
    make_reported_host(name="big", port_range_end=20499)  # 50 blocks
    project = make_project(template_version=postgres)
    assert [host.name for host in candidates(project)] == ["big", "small", "failing"]


def test_what_a_host_reported_is_trusted_for_the_max_age_in_seconds_only_while_it_has_not_failed(settings):
    settings.BERTH_HOST_INFO_MAX_AGE = 60
    now = timezone.now()
    assert knows_it_answers(make_reported_host(last_seen_at=now - timedelta(seconds=30)))
    assert not knows_it_answers(make_reported_host(last_seen_at=now - timedelta(seconds=90)))
    failed_since = make_reported_host(last_seen_at=now - timedelta(seconds=5), last_error="timed out")
    assert not knows_it_answers(failed_since)
    assert not knows_it_answers(make_reported_host(last_seen_at=None))


def test_a_project_holding_a_block_keeps_its_host_even_when_its_blocks_are_too_small(postgres):
    host = make_reported_host(block_size=10)
    project = make_project(template_version=postgres, host=host)
    make_port_block(project)
    host.block_size = 0  # the template's slots no longer fit this host's blocks
    assert not unplace_if_unfit(project)
    project.refresh_from_db()
    assert project.host == host
