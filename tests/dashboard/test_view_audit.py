"""The audit page: the whole trail for staff, filtered by who, what, project and time."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.actions import record
from audit.models import AuditEntry
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def rows(response) -> str:
    """The page below its filter form (whose action choices name every action)."""
    html = response.content.decode()
    return html[html.index("</form>", html.index('class="filters"')) :]


@pytest.fixture
def trail(staff_user, django_user_model, tmp_path):
    other = django_user_model.objects.create_user("nightshift", is_staff=True)
    orders, billing = make_project(name="Orders"), make_project(name="Billing")
    record(staff_user, "operation.stop", project=orders)
    record(other, "operation.start", project=billing)
    record(None, "host.drain", label="manage.py hosts", detail={"name": "east"})
    old = record(other, "project.reveal_secret", project=orders, detail={"secret": "postgres_password"})
    AuditEntry.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=3))
    return {"orders": orders, "billing": billing}


def test_it_rejects_post(staff_client):
    assert staff_client.post(reverse("dashboard:audit")).status_code == 405


def test_it_says_so_when_nothing_is_recorded(staff_client):
    assert b"No audit entry matches" in staff_client.get(reverse("dashboard:audit")).content


def test_it_lists_every_entry_newest_first(staff_client, trail):
    html = rows(staff_client.get(reverse("dashboard:audit")))
    assert html.index("host.drain") < html.index("operation.start") < html.index("operation.stop")
    assert html.index("operation.stop") < html.index("project.reveal_secret")


def test_it_filters_by_who(staff_client, trail):
    html = rows(staff_client.get(reverse("dashboard:audit"), {"actor": "night"}))
    assert "operation.start" in html and "project.reveal_secret" in html
    assert "operation.stop" not in html and "host.drain" not in html


def test_it_filters_by_what(staff_client, trail):
    html = rows(staff_client.get(reverse("dashboard:audit"), {"action": "host.drain"}))
    assert "<code>host.drain</code>" in html and "<code>operation.start</code>" not in html


def test_it_filters_by_project_ref_or_name(staff_client, trail):
    by_ref = rows(staff_client.get(reverse("dashboard:audit"), {"project": trail["billing"].ref}))
    assert "operation.start" in by_ref and "operation.stop" not in by_ref
    by_name = rows(staff_client.get(reverse("dashboard:audit"), {"project": "orde"}))
    assert "operation.stop" in by_name and "operation.start" not in by_name


def test_it_filters_by_time(staff_client, trail):
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    html = rows(staff_client.get(reverse("dashboard:audit"), {"since": since}))
    assert "operation.stop" in html and "project.reveal_secret" not in html
    until = (timezone.now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    html = rows(staff_client.get(reverse("dashboard:audit"), {"until": until}))
    assert "<code>project.reveal_secret</code>" in html and "<code>operation.stop</code>" not in html


def test_a_bad_filter_value_is_reported_and_lists_nothing(staff_client, trail):
    html = rows(staff_client.get(reverse("dashboard:audit"), {"since": "yesterday-ish"}))
    assert "Enter a valid date/time" in html and "<code>operation.stop</code>" not in html


def _next_link(html: str) -> str | None:
    found = re.search(r'href="\?([^"]*)">Next', html)
    return found.group(1).replace("&amp;", "&") if found else None


def test_it_pages_through_every_entry_once_keeping_the_filters(staff_client):
    orders = make_project(name="Orders")
    made = [record(None, "operation.start", project=orders, label="cron").pk for _ in range(57)]
    record(None, "host.drain", label="cron")
    first = staff_client.get(reverse("dashboard:audit"), {"action": "operation.start"}).content.decode()
    following = _next_link(first)
    assert following is not None and "action=operation.start" in following
    second = staff_client.get(f"{reverse('dashboard:audit')}?{following}").content.decode()
    shown = [int(pk) for pk in re.findall(r'data-entry="(\d+)"', first + second)]
    assert shown == sorted(made, reverse=True)
    assert _next_link(second) is None


def test_its_first_and_last_page_cost_the_same_queries_for_5_and_300_entries(staff_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    orders = make_project(name="Orders")
    staff_client.get(reverse("dashboard:audit"))  # session and user lookups warm up alike

    def queries_for(count):
        AuditEntry.objects.all().delete()
        AuditEntry.objects.bulk_create(
            AuditEntry(actor_label="cron", action=f"operation.{n % 4}", project=orders) for n in range(count)
        )
        counts = []
        for params in ({}, {"action": "operation.1"}, {"project": orders.ref}):
            html = staff_client.get(reverse("dashboard:audit"), params).content.decode()
            last = _next_link(html) or ""
            with CaptureQueriesContext(connection) as captured:
                assert staff_client.get(f"{reverse('dashboard:audit')}?{last}").status_code == 200
            counts.append(len(captured))
        return counts

    assert queries_for(5) == queries_for(300)


@pytest.mark.postgres
def test_its_action_choices_come_from_a_skip_scan_that_finds_every_action():
    for action in ("b.two", "a.one", "b.two", "c.three", "a.one"):
        record(None, action, label="cron")
    assert AuditEntry.objects.actions() == ["a.one", "b.two", "c.three"]
