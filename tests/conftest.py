from unittest import mock

import pytest
from django.conf import settings

from tests.stack import RUNTIMES

# The agent tests' fixtures (a real agent process on loopback); they need no database.
pytest_plugins = ["tests.agent_fixtures"]


def pytest_report_header(config):
    reason = settings.POSTGRES_UNREACHABLE_REASON
    if reason is None:
        database = settings.DATABASES["default"]
        return f"database: PostgreSQL at {database['HOST']}:{database['PORT']}"
    return (
        "!" * 78 + "\n"
        f"NO POSTGRESQL REACHABLE ({reason}).\n"
        "Tests marked `postgres` are SKIPPED; the rest run on SQLite. Set TEST_DATABASE_URL.\n" + "!" * 78
    )


def pytest_collection_modifyitems(config, items):
    reason = settings.POSTGRES_UNREACHABLE_REASON
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs PostgreSQL: {reason}")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-password", is_staff=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("admin", password="admin-password")


@pytest.fixture
def admin_client_logged_in(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def enqueued():
    """django-q2's async_task as a mock: what is enqueued is recorded (task id "task-1"), nothing runs.
    Modules whose every test needs it say `pytest.mark.usefixtures("enqueued")`."""
    with mock.patch("django_q.tasks.async_task", return_value="task-1") as async_task:
        yield async_task


@pytest.fixture
def supabase():
    """The supabase template registered as a version."""
    from tests.factories import register_template

    return register_template(RUNTIMES / "supabase")


@pytest.fixture
def postgres():
    """The postgres template registered as a version."""
    from tests.factories import register_template

    return register_template(RUNTIMES / "postgres")


@pytest.fixture
def reported_host():
    """A host whose agent has reported its capabilities; tests that need one ask for it by name."""
    from tests.factories import make_reported_host

    return make_reported_host()


@pytest.fixture
def silent_agent():
    """An agent address that accepts connections and never answers."""
    from tests.stack import SilentServer

    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def fresh_telemetry():
    """Each test counts its own events: what earlier tests counted in this process (and, in a
    test's transaction, could not flush) is dropped."""
    from telemetry import record

    with record._lock:
        record._pending.clear()
