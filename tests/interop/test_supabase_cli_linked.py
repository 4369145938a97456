"""The official Supabase CLI's `--linked` commands through the host's database router, as on the
platform: after `link`, with no `--db-url`, `db push`, `migration list`, `inspect db table-stats`
and `db lint` reach the project's database at `db.<ref>.<domain>:5432`, with
SUPABASE_DB_PASSWORD and without it (a temporary login role from `cli/login-role`); psql
reaches it through the pooler in transaction mode as `postgres.<ref>`; and another
organization's ref with this project's password is refused.

The CLI (Go) resolves names from /etc/hosts: each command runs in a mount namespace of its
own (`unshare -m`) with a hosts file naming the router's loopback address, so the machine's
file is never edited. The router listens on 127.0.0.27, port 5432 and 6543, as the CLI dials
them (5432 on 127.0.0.1 is Berth's own database here)."""

import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import psycopg
import pytest

from operations.creation import create_project
from orgs.actions import create_token
from orgs.models import Organization
from projects.models import LoginRole, Project, Status
from tests.api_helpers import join, make_org, make_user
from tests.interop.conftest import CLI, PASSWORD, Stack
from tests.stack import PORT_BASE, Worker, agent_host, free_port_range, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUTER_ADDRESS = "127.0.0.27"
# A reserved name that no resolver answers for (RFC 6761): only the hosts file names it.
DOMAIN = "berth.test"
POOLER = f"pooler.{DOMAIN}"


def _unusable() -> str | None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs root and unshare (util-linux) to give the CLI a hosts file of its own"
    if not Path("/usr/share/postgresql/15/extension/plpgsql_check.control").exists():
        return "plpgsql_check for PostgreSQL 15 is missing (the CLI's db lint creates it): scripts/db-packages"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare -m is refused here: {probe.stderr.decode().strip()}"
    for port in (5432, 6543):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the router binds
            try:
                sock.bind((ROUTER_ADDRESS, port))
            except OSError as exc:
                return f"{ROUTER_ADDRESS}:{port} cannot be bound: {exc.strerror}"
    return None


class LinkedStack(Stack):
    """The interop stack whose CLI and psql resolve the database names to the router."""

    def resolve(self, *names: str) -> None:
        hosts = self.tmp_path / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{ROUTER_ADDRESS} {name}\n" for name in names))
        self.hosts = hosts

    def in_namespace(self, argv: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
        script = f"mount --bind {shlex.quote(str(self.hosts))} /etc/hosts && exec {shlex.join(argv)}"
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    def linked(self, *args, token: str, cwd, password: str | None = None, check: bool = True):
        env = {"PATH": os.environ["PATH"], "HOME": str(self.home), "SUPABASE_ACCESS_TOKEN": token, "DO_NOT_TRACK": "1"}
        if password is not None:
            env["SUPABASE_DB_PASSWORD"] = password
        result = self.in_namespace([str(CLI), "--profile", str(self.profile), *args], env, cwd)
        if check and result.returncode != 0:
            raise AssertionError(
                f"supabase {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def psql(self, url: str, sql: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "10"}
        return self.in_namespace(["psql", url, "-Atc", sql], env, self.tmp_path)


@pytest.fixture
def linked_stack(live_server, agent_factory, tmp_path, settings):
    from hosts.actions import refresh_host

    settings.BERTH_DATABASE_DOMAIN = DOMAIN

    if reason := _unusable():
        pytest.skip(f"LINKED CLI INTEROP TESTS SKIPPED: {reason}")
    agent = agent_factory(
        env={
            "BERTH_ROUTER_LISTEN": f"{ROUTER_ADDRESS}:5432",
            "BERTH_POOLER_LISTEN": f"{ROUTER_ADDRESS}:6543",
            "BERTH_PGBOUNCER_LISTEN": f"127.0.0.1:{free_port_range(1, PORT_BASE + 520)}",
        }
    )
    host = agent_host(agent)
    assert refresh_host(host, deadline=10)
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=60, BERTH_AGENT_CALL_DEADLINE=20, BERTH_DATABASE_DOMAIN=DOMAIN)
    stack = LinkedStack(live_server, host, agent, tmp_path)
    stack.profile.write_text(stack.profile.read_text().replace("berth.localhost", DOMAIN))
    yield stack
    worker.stop()


def routed(stack: LinkedStack, *refs: str) -> bool:
    """The agent's router serves every ref, PgBouncer included (pushed after their provisioning)."""
    status = stack.agent.client().info().router
    return status.pooled >= len(refs) and status.db.listening and status.pooler.listening


def test_linked_commands_reach_the_database_through_the_router_with_a_password_and_with_a_login_role(linked_stack):
    stack = linked_stack
    alice = make_user("alice")
    token = create_token(alice, name="cli")[1]
    stack.cli("orgs", "create", "Acme", token=token)
    [org] = stack.cli_json("orgs", "list", token=token)
    # PostgreSQL 15, whose Debian package has plpgsql_check (the CLI's `db lint` creates it);
    # the CLI's `projects create` takes no version and the API would pick the newest a host runs.
    ref = create_project(
        name="Orders",
        postgres_major=15,
        template="postgres",
        organization=Organization.objects.get(slug=org["id"]),
        postgres_password=PASSWORD,
    ).ref
    wait_for(
        lambda: Project.objects.get(ref=ref).status == Status.ACTIVE_HEALTHY, timeout=120, interval=1, what="healthy"
    )
    wait_for(lambda: routed(stack, ref), timeout=30, interval=0.5, what=f"{ref} routed")
    stack.resolve(f"db.{ref}.{DOMAIN}", POOLER)

    workdir = stack.tmp_path / "app"
    workdir.mkdir()
    stack.cli("init", "--yes", token=token, cwd=workdir)
    stack.cli("link", "--project-ref", ref, token=token, cwd=workdir)
    migrations = workdir / "supabase" / "migrations"
    migrations.mkdir(exist_ok=True)

    for version, password in (("20260101000000", PASSWORD), ("20260102000000", None)):
        table = f"orders_{version[-8:-6]}"
        (migrations / f"{version}_{table}.sql").write_text(
            f"create table {table} (id bigint primary key, note text);\n"
        )
        pushed = stack.linked("db", "push", "--linked", "--yes", token=token, cwd=workdir, password=password)
        said = pushed.stdout + pushed.stderr
        assert "Finished supabase db push" in said
        assert ("Initialising login role" in said) == (password is None)
        listing = stack.linked("migration", "list", "--linked", token=token, cwd=workdir, password=password)
        assert listing.stdout.count(version) == 2  # local and remote
        stats = stack.linked("inspect", "db", "table-stats", "--linked", token=token, cwd=workdir, password=password)
        assert table in stats.stdout
        stack.linked("db", "lint", "--linked", token=token, cwd=workdir, password=password)

    # Where db.<ref> cannot be reached, the CLI takes the linked pooler string (port 5432, user
    # postgres.<ref>, a login role as cli_login_postgres.<ref>): the router's session path.
    stack.resolve(POOLER)
    for password in (PASSWORD, None):
        listing = stack.linked("migration", "list", "--linked", token=token, cwd=workdir, password=password)
        assert listing.stdout.count("20260102000000") == 2
        assert ("Initialising login role" in listing.stderr) == (password is None)
    stack.resolve(f"db.{ref}.{DOMAIN}", POOLER)

    login = LoginRole.objects.get(project__ref=ref)
    assert login.role == "cli_login_postgres" and not login.read_only
    project = Project.objects.get(ref=ref)
    with psycopg.connect(
        host=f"db.{ref}.{DOMAIN}",
        hostaddr=ROUTER_ADDRESS,
        port=5432,
        user="postgres",
        password=PASSWORD,
        dbname="postgres",
        sslmode="require",
    ) as direct:
        owners = direct.execute(
            "select tableowner from pg_tables where tablename in ('orders_01', 'orders_02')"
        ).fetchall()
        assert owners == [("postgres",), ("postgres",)]  # the login role stepped up to postgres
        valid_until = direct.execute(
            "select rolvaliduntil from pg_roles where rolname = 'cli_login_postgres'"
        ).fetchone()
        assert valid_until[0] == login.expires_at

    # The pooler, as the dashboard and the platform give it: psql in transaction mode.
    pooled = stack.psql(
        f"postgres://postgres.{ref}:{PASSWORD}@{POOLER}:6543/postgres", "select count(*) from orders_01"
    )
    assert pooled.returncode == 0, pooled.stderr
    assert pooled.stdout.strip() == "0"
    assert project.pool_size == 15

    # Another organization's project, named with this project's password: refused at both addresses.
    bob = make_user("bob")
    theirs = make_org("Bob's")
    join(bob, theirs)
    bobs = create_project(name="Secret", postgres_major=15, template="postgres", organization=theirs)
    wait_for(
        lambda: Project.objects.get(pk=bobs.pk).status == Status.ACTIVE_HEALTHY, timeout=120, interval=1, what="bob's"
    )
    wait_for(lambda: routed(stack, ref, bobs.ref), timeout=30, interval=0.5, what=f"{bobs.ref} routed")
    stack.resolve(f"db.{bobs.ref}.{DOMAIN}", POOLER)
    for url in (
        f"postgres://postgres:{PASSWORD}@db.{bobs.ref}.{DOMAIN}:5432/postgres",
        f"postgres://postgres.{bobs.ref}:{PASSWORD}@{POOLER}:6543/postgres",
        f"postgres://postgres.{bobs.ref}:{PASSWORD}@{POOLER}:5432/postgres",
    ):
        refused = stack.psql(url, "select 1")
        assert refused.returncode != 0
        # The project's server says it, or PgBouncer checking against the project's own roles.
        assert "password authentication failed" in refused.stderr or "SASL authentication failed" in refused.stderr
