import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import parse_qs

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from berth.keyset import AFTER, _encode
from operations.models import Kind, Operation, State
from projects.models import Project, Status
from tests.dashboard_helpers import process_host, register_template
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_it_sends_anonymous_users_to_login(client):
    response = client.get(reverse("dashboard:projects"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_it_forbids_signed_in_non_staff(client, django_user_model):
    user = django_user_model.objects.create_user("visitor", password="pw")
    client.force_login(user)
    assert client.get(reverse("dashboard:projects")).status_code == 403


def test_it_rejects_post(staff_client):
    assert staff_client.post(reverse("dashboard:projects")).status_code == 405


def test_it_shows_the_empty_state_with_what_to_do(staff_client):
    response = staff_client.get(reverse("dashboard:projects"))
    assert response.status_code == 200
    assert b"No projects yet" in response.content
    assert reverse("dashboard:create_project").encode() in response.content


def test_it_lists_projects_and_escapes_what_users_typed(staff_client):
    project = make_project(name="<b>Orders</b>")
    response = staff_client.get(reverse("dashboard:projects"))
    assert project.ref.encode() in response.content
    assert b"&lt;b&gt;Orders&lt;/b&gt;" in response.content
    assert b"<b>Orders</b>" not in response.content


def test_it_escapes_the_search_box(staff_client):
    make_project()
    response = staff_client.get(reverse("dashboard:projects"), {"q": '"><script>x</script>'})
    assert b"<script>x</script>" not in response.content


def test_it_loads_htmx_from_django_htmx_and_sends_csrf_in_hx_headers(staff_client):
    response = staff_client.get(reverse("dashboard:projects"))
    html = response.content.decode()
    assert "/static/django_htmx/htmx" in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert "cdn" not in html.lower()


def test_login_page_renders_for_anonymous(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b"Sign in to Berth" in response.content


def test_it_shows_the_last_operation(staff_client):
    project = make_project()
    Operation.objects.create(project=project, kind=Kind.STOP, state=State.FAILED, deadline=timezone.now())
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert "stop" in html and "opstate-failed" in html


def test_it_marks_projects_with_an_update_available(staff_client, tmp_path):
    old = register_template(tmp_path)
    register_template(tmp_path, readme="a newer readme\n")
    behind = make_project(template_version=old, name="Behind")
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert behind.ref in html and "update available" in html
    filtered = staff_client.get(reverse("dashboard:projects"), {"drift": "current"}).content.decode()
    assert behind.ref not in filtered


def test_it_marks_locally_modified_projects_and_filters_them(staff_client):
    drifted = make_project(name="Drifted", drifted_paths=["runtime.toml"], drift_checked_at=timezone.now())
    clean = make_project(name="Clean", drift_checked_at=timezone.now())
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert html.count("locally modified</span>") == 1 and "edited on the host: runtime.toml" in html
    filtered = staff_client.get(reverse("dashboard:projects"), {"drift": "modified"}).content.decode()
    assert drifted.ref in filtered and clean.ref not in filtered


def test_it_filters_by_status_host_template_and_search(staff_client):
    host = process_host(name="east")
    healthy = make_project(name="Alpha", status=Status.ACTIVE_HEALTHY, host=host)
    stopped = make_project(name="Beta", status=Status.INACTIVE)

    def refs(**params):
        html = staff_client.get(reverse("dashboard:projects"), params).content.decode()
        return {p.ref for p in (healthy, stopped) if p.ref in html}

    assert refs(status="INACTIVE") == {stopped.ref}
    assert refs(host="east") == {healthy.ref}
    assert refs(q="alp") == {healthy.ref}
    assert refs(q=stopped.ref[:8]) == {stopped.ref}
    assert refs(template=healthy.template) == {healthy.ref, stopped.ref}
    assert refs(status="NOT-A-STATUS") == {healthy.ref, stopped.ref}


def _cursor(html: str, label: str) -> str | None:
    """The cursor of the pagination link labelled `label`, or None when there is none."""
    match = re.search(r'href="\?([^"]*)">' + re.escape(label), html)
    if match is None:
        return None
    return parse_qs(unescape(match.group(1)))["cursor"][0]


def _refs_shown(html: str) -> list[str]:
    return re.findall(r'name="refs" value="([a-z0-9]+)"', html)


def test_it_pages_with_cursors_through_every_project_once_even_when_created_at_ties(staff_client):
    version = make_project().template_version
    for n in range(55):
        make_project(name=f"P{n}", template_version=version)
    # Rows created in one instant: only the id tells them apart, and no row may be skipped or repeated.
    Project.objects.update(created_at=timezone.now())
    first = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert len(_refs_shown(first)) == 50
    assert _cursor(first, "← Previous") is None
    second = staff_client.get(reverse("dashboard:projects"), {"cursor": _cursor(first, "Next →")}).content.decode()
    assert len(_refs_shown(second)) == 6 and _cursor(second, "Next →") is None
    assert sorted(_refs_shown(first) + _refs_shown(second)) == sorted(Project.objects.values_list("ref", flat=True))
    back = staff_client.get(reverse("dashboard:projects"), {"cursor": _cursor(second, "← Previous")}).content.decode()
    assert _refs_shown(back) == _refs_shown(first)
    assert _cursor(back, "← Previous") is None


def test_it_shows_the_first_page_for_a_cursor_it_cannot_read(staff_client):
    project = make_project()
    for cursor in ("garbage", "WyJhIiwxXQ", "WyJhIixbbnVsbCxudWxsXV0"):
        html = staff_client.get(reverse("dashboard:projects"), {"cursor": cursor}).content.decode()
        assert _refs_shown(html) == [project.ref]


def test_it_keeps_the_filters_on_the_next_page(staff_client):
    version = make_project(status=Status.INACTIVE).template_version
    for n in range(51):
        make_project(name=f"P{n}", template_version=version, status=Status.ACTIVE_HEALTHY)
    first = staff_client.get(reverse("dashboard:projects"), {"status": "ACTIVE_HEALTHY"}).content.decode()
    link = re.search(r'href="\?([^"]*)">Next', first).group(1)
    params = parse_qs(unescape(link))
    assert params["status"] == ["ACTIVE_HEALTHY"]
    second = staff_client.get(reverse("dashboard:projects"), params).content.decode()
    assert len(_refs_shown(second)) == 1


def test_it_polls_only_while_a_project_is_in_flight(staff_client):
    settled = make_project(status=Status.ACTIVE_HEALTHY)
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert 'hx-trigger="every 2s"' not in html
    coming = make_project(status=Status.COMING_UP)
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert 'hx-trigger="every 2s"' in html
    assert f"ref={coming.ref}" in html and f"ref={settled.ref}" not in html


def _seed(count: int) -> None:
    host = process_host()
    version = make_project().template_version
    projects = Project.objects.bulk_create(
        Project(name=f"P{n}", postgres_major=15, template=version.name, template_version=version, host=host)
        for n in range(count)
    )
    Operation.objects.bulk_create(
        Operation(project=p, kind=Kind.PROVISION, state=State.SUCCEEDED, deadline=timezone.now()) for p in projects
    )


def _page_queries(staff_client, params) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert staff_client.get(reverse("dashboard:projects"), params).status_code == 200
    return len(captured)


def test_its_first_page_last_page_and_search_cost_the_same_queries_for_5_and_500_projects(staff_client):
    staff_client.get(reverse("dashboard:projects"))  # session and user lookups warm up alike for every count

    def queries_for(count):
        Operation.objects.all().delete()
        Project.objects.all().delete()
        _seed(count)
        # The last page: the one after the second-oldest row, reached with a cursor.
        second_oldest = Project.objects.order_by("created_at", "pk")[1]
        last = {"cursor": _encode(AFTER, second_oldest, [("created_at", True), ("pk", True)])}
        html = staff_client.get(reverse("dashboard:projects"), last).content.decode()
        assert len(_refs_shown(html)) == 1
        return (
            _page_queries(staff_client, {}),
            _page_queries(staff_client, last),
            _page_queries(staff_client, {"q": "P1"}),
        )

    assert queries_for(5) == queries_for(500)


class _Table(HTMLParser):
    """The text of each header and each row's cells of the first table."""

    def __init__(self):
        super().__init__()
        self.headers, self.rows, self._cell, self._in = [], [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell, self._in = [], tag

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            text = " ".join("".join(self._cell).split())
            (self.headers if self._in == "th" else self._row).append(text)
            self._cell = None
        elif tag == "tr" and getattr(self, "_row", None):
            self.rows.append(self._row)
            self._row = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_each_column_shows_its_own_value(staff_client, tmp_path):
    version = register_template(tmp_path)
    project = make_project(name="Orders", template_version=version, postgres_major=16, host=process_host(name="east-1"))
    table = _Table()
    table.feed(staff_client.get(reverse("dashboard:projects")).content.decode())
    (row,) = [dict(zip(table.headers, cells, strict=True)) for cells in table.rows]
    assert row["Ref"] == project.ref
    assert row["Name"] == "Orders"
    assert row["Host"] == "east-1"
    assert row["Postgres"] == "16"
    assert row["Template"].startswith(str(version))


def names_in_order(html: str) -> list[str]:
    body = html[html.index('id="projects-table"') :]
    return [row.split("</a>")[0].rsplit(">", 1)[1] for row in body.split('<td class="col-name">')[1:]]


def test_it_shows_the_name_first_and_the_ref_second(staff_client):
    project = make_project(name="Orders")
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    row = html[html.index(f'value="{project.ref}"') :]
    assert row.index("Orders") < row.index(f"<code>{project.ref}</code>")


def test_it_sorts_by_a_column_either_way_and_keeps_the_sort_in_the_filters(staff_client):
    for name in ("Bravo", "Alpha", "Charlie"):
        make_project(name=name)
    default = names_in_order(staff_client.get(reverse("dashboard:projects")).content.decode())
    assert default == ["Charlie", "Alpha", "Bravo"]  # newest first
    up = staff_client.get(reverse("dashboard:projects"), {"sort": "name"}).content.decode()
    assert names_in_order(up) == ["Alpha", "Bravo", "Charlie"]
    assert 'href="?sort=-name"' in up and '<input type="hidden" name="sort" value="name">' in up
    down = staff_client.get(reverse("dashboard:projects"), {"sort": "-name"}).content.decode()
    assert names_in_order(down) == list(reversed(names_in_order(up)))
    ignored = staff_client.get(reverse("dashboard:projects"), {"sort": "secrets"}).content.decode()
    assert names_in_order(ignored) == default


def test_it_shows_times_as_people_read_them(staff_client):
    project = make_project()
    Operation.objects.create(project=project, kind=Kind.PROVISION, state=State.SUCCEEDED, deadline=timezone.now())
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert "now" in html[html.index(f'id="lastop-{project.ref}"') :][:400]


def test_it_offers_select_all(staff_client):
    make_project()
    html = staff_client.get(reverse("dashboard:projects")).content.decode()
    assert 'data-select-all="refs"' in html


@pytest.mark.parametrize(
    "sort", ["name", "-name", "host", "-host", "lastop", "status", "-postgres", "template", "-ref", "created"]
)
def test_it_pages_a_sorted_list_with_cursors_through_every_project_once(staff_client, sort):
    version = make_project().template_version
    east, west = process_host(name="east"), process_host(name="west")
    for n in range(56):
        # Repeated names and hosts (and no host at all) make ties and empty values to page across.
        make_project(name=f"P{n % 7}", template_version=version, host=[east, west, None][n % 3])
    first = staff_client.get(reverse("dashboard:projects"), {"sort": sort}).content.decode()
    cursor = _cursor(first, "Next →")
    second = staff_client.get(reverse("dashboard:projects"), {"sort": sort, "cursor": cursor}).content.decode()
    shown = _refs_shown(first) + _refs_shown(second)
    assert sorted(shown) == sorted(Project.objects.values_list("ref", flat=True))
    if sort.lstrip("-") == "name":
        names = dict(Project.objects.values_list("ref", "name"))
        ordered = [names[ref] for ref in shown]
        assert ordered == sorted(ordered, reverse=sort.startswith("-"))
    if sort.lstrip("-") == "host":
        hosts = dict(Project.objects.values_list("ref", "host__name"))
        assert [hosts[ref] for ref in shown][-19:] == [None] * 19, "projects without a host come last"


def _project_page_plan(staff_client, params) -> tuple[str, str]:
    """The page's HTML, and the plan of its row query with sequential scans and sorts
    priced out: whatever an index can serve, it serves."""
    with CaptureQueriesContext(connection) as captured:
        response = staff_client.get(reverse("dashboard:projects"), params)
    (rows,) = [q["sql"] for q in captured if 'FROM "projects_project"' in q["sql"] and "LIMIT 51" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(f"EXPLAIN {rows}")
        return response.content.decode(), "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sort", ["", "name", "-name", "ref", "-postgres", "status", "-template", "created", "lastop", "-lastop"]
)
def test_its_column_sorts_walk_an_index_instead_of_sorting_every_project(staff_client, sort):
    version = make_project().template_version
    Project.objects.bulk_create(
        Project(name=f"P{n % 7}", postgres_major=15, template=version.name, template_version=version) for n in range(55)
    )
    html, first = _project_page_plan(staff_client, {"sort": sort})
    _, following = _project_page_plan(staff_client, {"sort": sort, "cursor": _cursor(html, "Next →")})
    for plan in (first, following):
        assert "Seq Scan on projects_project" not in plan, plan
        assert not re.search(r"(^|->)\s*Sort\s+\(", plan, re.MULTILINE), plan  # Incremental Sort is fine


def test_it_sorts_by_last_activity_the_latest_request_first(staff_client):
    from datetime import timedelta

    quiet, busy, fresh = (make_project(name=name) for name in ("Quiet", "Busy", "Fresh"))
    now = timezone.now()
    Project.objects.filter(pk=quiet.pk).update(last_activity_at=now - timedelta(days=3))
    Project.objects.filter(pk=busy.pk).update(last_activity_at=now)
    Project.objects.filter(pk=fresh.pk).update(last_activity_at=now - timedelta(days=1))
    html = staff_client.get(reverse("dashboard:projects"), {"sort": "-lastop"}).content.decode()
    assert names_in_order(html) == ["Busy", "Fresh", "Quiet"]
