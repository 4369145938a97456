"""ProjectQuerySet.search: ref by prefix, name by substring, both on indexes that keep a
search's cost from growing with the fleet (PostgreSQL)."""

import pytest
from django.db import connection

from projects.models import Project
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_it_finds_refs_by_prefix_whatever_the_case():
    project = make_project(name="Orders")
    other = make_project(name="Billing")
    assert list(Project.objects.search(project.ref[:7].upper())) == [project]
    assert other not in Project.objects.search(project.ref[1:8])  # a prefix, not a substring


def test_it_finds_names_by_substring_whatever_the_case():
    project = make_project(name="Acme Orders (eu)")
    make_project(name="Billing")
    assert list(Project.objects.search("  orders (EU ")) == [project]


def test_it_takes_text_no_ref_could_begin_with():
    project = make_project(name="50% off")
    make_project(name="Billing")
    assert list(Project.objects.search("50% o")) == [project]
    assert list(Project.objects.search("_")) == []


def _plan(queryset) -> str:
    sql, params = queryset.values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres
def test_it_searches_names_and_refs_on_indexes():
    make_project(name="Orders")
    plan = _plan(Project.objects.search("orders"))
    assert "project_name_trgm" in plan and "_like" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.postgres
def test_the_name_index_keeps_no_pending_list():
    # A GIN pending list is read whole by every search until autovacuum merges it.
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'project_name_trgm'")
        assert cursor.fetchone()[0] == ["fastupdate=off"]
