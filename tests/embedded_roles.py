"""The parts `scripts/dev` runs beside its worker, each in its own process on one database,
for tests/berth/test_embedded_database.py. Run as `manage.py shell -c "from tests.embedded_roles
import main; main('<role>', '<folder>')"`.

- `setup`: the local admin, the templates, and a runtime host on the agent named by
  AGENT_URL / AGENT_TOKEN with the port range starting at PORT_RANGE_START.
- `periodic`: the periodic tasks (reaper, health refresh, drift check) back to back,
  as fast as they go, until the folder holds `stop`.
- `read_then_write`: two threads run the lease claim's pattern at once, each a transaction
  that reads first and writes later; prints the journal mode and what each thread met.
- `web`: a staff user's dashboard session: creates PROJECTS postgres projects one after
  another through the create form, keeps polling the pages while they come up, then
  stops them all and starts them all again with the bulk form. Prints a JSON summary of
  every project and operation as its last line.

A role that fails (a database error included) exits non-zero with its traceback.
"""

import json
import os
import time
from pathlib import Path
from urllib.parse import urlencode

SETTLE_TIMEOUT_S = 240


def main(role: str, folder: str) -> None:
    {"setup": setup, "periodic": periodic, "read_then_write": read_then_write, "web": web}[role](Path(folder))


def setup(folder: Path) -> None:
    from django.core.management import call_command

    from hosts.actions import refresh_host
    from hosts.models import RuntimeHost

    call_command("devsetup", agent_url=os.environ["AGENT_URL"])
    call_command("templates", "sync")
    first = int(os.environ["PORT_RANGE_START"])
    RuntimeHost.objects.filter(name="local").update(
        agent_token=os.environ["AGENT_TOKEN"], port_range_start=first, port_range_end=first + 8 * 20 - 1
    )
    # First contact with a generous deadline: the agent's first info looks its Postgres
    # installations up, which on a loaded machine can outlast the page deadline creation allows.
    assert refresh_host(RuntimeHost.objects.get(name="local"), deadline=30), "the agent did not report"


def periodic(folder: Path) -> None:
    from operations import tasks

    rounds = 0
    while not (folder / "stop").exists():
        tasks.reap()
        tasks.refresh_health()
        tasks.check_drift()
        rounds += 1
    print(f"periodic: {rounds} rounds", flush=True)


def read_then_write(folder: Path) -> None:
    import threading

    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    users = get_user_model().objects
    first_has_read = threading.Event()
    outcomes = {}

    def claim(name: str, hold_s: float) -> None:
        try:
            with transaction.atomic():
                users.filter(username__startswith="claim-").count()
                first_has_read.set()
                time.sleep(hold_s)  # the other writer goes meanwhile
                users.create(username=f"claim-{name}")
            outcomes[name] = "ok"
        except Exception as error:
            outcomes[name] = f"{type(error).__name__}: {error}"
        finally:
            connection.close()

    first = threading.Thread(target=claim, args=("first", 1.0))
    first.start()
    first_has_read.wait(timeout=30)
    claim("second", 0.0)
    first.join()
    with connection.cursor() as cursor:
        journal_mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
    print(json.dumps({"journal_mode": journal_mode, "outcomes": outcomes, "rows": users.count()}), flush=True)


def web(folder: Path) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from operations.models import Operation
    from projects.models import Project, Status

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username="admin"))

    def page(url: str) -> None:
        response = client.get(url)
        assert response.status_code in (200, 286), f"GET {url}: {response.status_code}"

    def settle(wanted: str) -> None:
        """Poll the dashboard as a browser does until no project is in flight."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            page(reverse("dashboard:projects"))
            page(reverse("dashboard:project_statuses") + "?" + urlencode([("ref", ref) for ref in refs]))
            busy = Project.objects.exclude(status__in=[wanted, Status.INIT_FAILED, Status.UNKNOWN])
            if not busy.exists() and not Operation.objects.filter(state__in=["queued", "running"]).exists():
                return
            time.sleep(0.2)
        raise AssertionError(f"projects did not settle as {wanted} within {SETTLE_TIMEOUT_S}s")

    refs = []
    for number in range(int(os.environ["PROJECTS"])):
        page(reverse("dashboard:create_project"))
        form = {"name": f"Shop {number}", "template": "postgres", "postgres_major": "15", "host": ""}
        response = client.post(reverse("dashboard:create_project"), form)
        assert response.status_code == 302, response.content.decode()[-2000:]
        refs.append(response["Location"].rstrip("/").rsplit("/", 1)[1])
        page(response["Location"])
    settle(Status.ACTIVE_HEALTHY)
    for action, wanted in (("stop", Status.INACTIVE), ("start", Status.ACTIVE_HEALTHY)):
        response = client.post(reverse("dashboard:bulk_action"), {"action": action, "refs": refs})
        assert response.status_code == 302
        settle(wanted)

    summary = {
        "projects": {p.ref: p.status for p in Project.objects.all()},
        "operations": [
            {"ref": ref, "kind": kind, "state": state, "error": error}
            for ref, kind, state, error in Operation.objects.order_by("pk").values_list(
                "project__ref", "kind", "state", "error_message"
            )
        ],
    }
    print(json.dumps(summary), flush=True)
