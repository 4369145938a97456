"""The agent's database router and PgBouncer (agent.router, agent.pooler) with real runtimes.

One agent with two process-driver projects serving TLS with certificates of their own; the
router on 127.0.0.27 (ports in the test window), clients naming their project by the TLS
server name (`host` is the name libpq sends, `hostaddr` where it connects) or by the user
`<role>.<ref>`."""

import hashlib
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from agent.api import FileSpec, RouteSpec, RoutesRequest
from templating.secrets import generate_tls_secrets
from tests.agent_fixtures import AgentPool, make_root, start_agent
from tests.stack import PORT_BASE, free_port_range, wait_for

ADDRESS = "127.0.0.27"
DOMAIN = "berth.test"
A, B = "routera0001", "routerb0002"
PASSWORDS = {A: "pass-of-project-a", B: "pass-of-project-b"}

pytestmark = pytest.mark.skipif(
    shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
    reason="ROUTER TESTS SKIPPED: PgBouncer is not installed (scripts/db-packages)",
)


class Endpoint:
    def __init__(self, pool: AgentPool, env: dict, db: int, pooler: int, ports: dict[str, int], certs: dict[str, str]):
        self.pool, self.env, self.agent = pool, env, pool.agents[0]
        self.db, self.pooler, self.ports, self.certs = db, pooler, ports, certs

    def push(self, **overrides) -> None:
        """The table with both projects; `overrides` maps a ref to its route's changed fields (None: left out)."""
        routes = []
        for ref in (A, B):
            fields = {"ref": ref, "port": self.ports[ref], "password": PASSWORDS[ref]}
            if ref in overrides:
                if overrides[ref] is None:
                    continue
                fields.update(overrides[ref])
            routes.append(RouteSpec(**fields))
        self.agent.client().routes(RoutesRequest(domain=DOMAIN, routes=routes))

    def pooled(self, count: int) -> None:
        wait_for(lambda: self.agent.client().info().router.pooled == count, timeout=30, what=f"{count} pooled")

    def direct(self, ref: str, password: str | None = None, **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host=f"db.{ref}.{DOMAIN}",
            hostaddr=ADDRESS,
            port=self.db,
            user="postgres",
            password=password or PASSWORDS.get(ref, "any"),
            dbname="postgres",
            sslmode=kwargs.pop("sslmode", "require"),
            connect_timeout=10,
            **kwargs,
        )

    def by_user(self, ref: str, port: int | None = None, password: str | None = None, **kwargs) -> psycopg.Connection:
        return psycopg.connect(
            host=f"pooler.{DOMAIN}",
            hostaddr=ADDRESS,
            port=port or self.pooler,
            user=kwargs.pop("user", f"postgres.{ref}"),
            password=password or PASSWORDS.get(ref, "any"),
            dbname="postgres",
            sslmode="require",
            connect_timeout=10,
            **kwargs,
        )


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    base = free_port_range(8, PORT_BASE + 540)
    db, pooler, pgbouncer = base, base + 1, base + 2
    env = {
        "BERTH_ROUTER_LISTEN": f"{ADDRESS}:{db}",
        "BERTH_POOLER_LISTEN": f"{ADDRESS}:{pooler}",
        "BERTH_PGBOUNCER_LISTEN": f"127.0.0.1:{pgbouncer}",
        "BERTH_ROUTER_MAX_CONNECTIONS": "6",
    }
    pool = AgentPool()
    agent = pool.start(env=env)
    client = agent.client(deadline=90)
    ports, certs = {A: base + 3, B: base + 4}, {}
    folder = tmp_path_factory.mktemp("certs")
    for ref in (A, B):
        tls = generate_tls_secrets(ref, DOMAIN)
        certs[ref] = str(folder / f"{ref}.crt")
        Path(certs[ref]).write_text(tls["tls_cert"])
        text = (
            f'driver = "process"\n[postgres]\nmajor = 15\nport = {ports[ref]}\npassword = "{PASSWORDS[ref]}"\n'
            f'tls_cert = """\n{tls["tls_cert"]}"""\ntls_key = """\n{tls["tls_key"]}"""\n'
        )
        client.put_files(ref, [FileSpec("runtime.toml", text.encode())], private_paths=["runtime.toml"])
        assert client.up(ref).state == "running"
    found = Endpoint(pool, env, db, pooler, ports, certs)
    found.push()
    found.pooled(2)
    yield found
    pool.close()


def port_of(connection: psycopg.Connection) -> int:
    return int(connection.execute("select current_setting('port')").fetchone()[0])


def test_a_db_name_reaches_its_own_runtime_which_does_tls_with_its_own_certificate(endpoint):
    for ref in (A, B):
        # verify-ca against the runtime's own certificate: only that server could have answered.
        with endpoint.direct(ref, sslmode="verify-ca", sslrootcert=endpoint.certs[ref]) as connection:
            assert port_of(connection) == endpoint.ports[ref]
            ssl_on = connection.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
            assert ssl_on == (True,)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        endpoint.direct(A, sslmode="verify-ca", sslrootcert=endpoint.certs[B])


def test_another_projects_password_is_refused_at_every_address(endpoint):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        endpoint.direct(B, password=PASSWORDS[A])
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        endpoint.by_user(B, port=endpoint.db, password=PASSWORDS[A])
    with pytest.raises(psycopg.OperationalError, match="SASL authentication failed|password authentication failed"):
        endpoint.by_user(B, password=PASSWORDS[A])


def test_the_user_role_ref_reaches_the_project_as_role_in_a_session_and_through_pgbouncer(endpoint):
    with endpoint.by_user(A, port=endpoint.db) as session:
        assert port_of(session) == endpoint.ports[A]
        assert session.execute("select current_user").fetchone() == ("postgres",)
    with endpoint.by_user(B) as pooled:
        assert port_of(pooled) == endpoint.ports[B]


def test_unknown_names_refs_and_shapes_get_a_postgres_error_never_a_hang(endpoint):
    cases = [
        (lambda: endpoint.direct("nosuchref99"), "Tenant or user not found: no project nosuchref99"),
        (lambda: endpoint.by_user("nosuchref99"), "Tenant or user not found: no project nosuchref99"),
        (lambda: endpoint.by_user(A, user="postgres"), "connect as <role>.<ref>"),
        (lambda: endpoint.by_user(A, port=endpoint.db, user="postgres"), "connect as <role>.<ref>"),
        (lambda: endpoint.direct(A, sslmode="disable"), "SSL connection is required"),
    ]
    for connect, said in cases:
        started = time.monotonic()
        with pytest.raises(
            psycopg.OperationalError, match=said.replace(".", r"\.").replace("<", ".").replace(">", ".")
        ):
            connect()
        assert time.monotonic() - started < 5


def test_the_pooler_serves_only_the_postgres_database(endpoint):
    with pytest.raises(psycopg.OperationalError, match="serves the database postgres"):
        psycopg.connect(
            host=f"pooler.{DOMAIN}",
            hostaddr=ADDRESS,
            port=endpoint.pooler,
            user=f"postgres.{A}",
            password=PASSWORDS[A],
            dbname="template1",
            sslmode="require",
            connect_timeout=10,
        )


def test_transaction_mode_shares_one_server_connection_between_clients(endpoint):
    endpoint.push(**{A: {"pool_size": 1}})
    wait_for(lambda: "pool_size=1" in pgbouncer_ini(endpoint), timeout=30, what="pool_size 1")
    first, second = endpoint.by_user(A, autocommit=True), endpoint.by_user(A, autocommit=True)
    with first, second:
        pids = {c.execute("select pg_backend_pid()").fetchone()[0] for c in (first, second, first, second)}
        assert len(pids) == 1
    endpoint.push()


def pgbouncer_ini(endpoint) -> str:
    return (endpoint.agent.root / ".berth-pooler" / "pgbouncer.ini").read_text()


def pgbouncer_pid(endpoint) -> int:
    return int((endpoint.agent.root / ".berth-pooler" / "pgbouncer.pid").read_text())


def test_a_route_change_reloads_pgbouncer_and_keeps_its_clients(endpoint):
    pid = pgbouncer_pid(endpoint)
    with endpoint.by_user(A, autocommit=True) as kept, endpoint.direct(B, autocommit=True) as direct:
        endpoint.push(**{A: {"pool_size": 7}})
        wait_for(lambda: "pool_size=7" in pgbouncer_ini(endpoint), timeout=30, what="the new pool size")
        time.sleep(0.5)  # the reload signal is handled
        assert kept.execute("select 1").fetchone() == (1,)
        assert direct.execute("select 1").fetchone() == (1,)
    assert pgbouncer_pid(endpoint) == pid
    endpoint.push()


def test_routes_follow_the_table_without_a_restart(endpoint):
    pid = endpoint.agent.process.pid
    with endpoint.direct(A, autocommit=True) as kept:
        endpoint.push(**{B: None})
        with pytest.raises(psycopg.OperationalError, match="no project routerb0002"):
            endpoint.direct(B)
        endpoint.push(**{B: {"paused": True}})
        with pytest.raises(psycopg.OperationalError, match="project routerb0002 is paused"):
            endpoint.direct(B)
        with pytest.raises(psycopg.OperationalError, match="project routerb0002 is paused"):
            endpoint.by_user(B)
        endpoint.push()
        endpoint.pooled(2)
        with endpoint.direct(B) as back:
            assert port_of(back) == endpoint.ports[B]
        assert kept.execute("select 1").fetchone() == (1,)
    assert endpoint.agent.process.pid == pid and endpoint.agent.process.poll() is None


def test_connections_are_limited_per_project_and_in_total(endpoint):
    endpoint.push(**{A: {"max_client_conn": 2}})
    held = [endpoint.direct(A), endpoint.by_user(A)]
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections for project routera0001"):
            endpoint.direct(A)
        held += [endpoint.direct(B) for _ in range(4)]  # 6: BERTH_ROUTER_MAX_CONNECTIONS
        with pytest.raises(psycopg.OperationalError, match="too many connections on this host"):
            endpoint.by_user(B)
    finally:
        for connection in held:
            connection.close()
    wait_for(lambda: endpoint.agent.client().info().router.connections == 0, timeout=10, what="connections closed")
    endpoint.push()
    with endpoint.direct(A) as again:
        assert port_of(again) == endpoint.ports[A]


def test_no_byte_of_one_tenants_stream_reaches_another(endpoint):
    """Many clients of both projects at once, each reading a large result only its own project
    could produce; every byte each receives is its own."""

    def stream(n: int) -> None:
        ref = (A, B)[n % 2]
        connect = (endpoint.direct, endpoint.by_user)[(n // 2) % 2]
        with connect(ref) as connection:
            rows = connection.execute(
                "select current_setting('port') || ':' || g || ':' || repeat(md5(g::text), 40) "
                "from generate_series(1, 3000) g"
            ).fetchall()
        port = endpoint.ports[ref]
        for g, (row,) in enumerate(rows, start=1):
            assert row == f"{port}:{g}:" + hashlib.md5(str(g).encode()).hexdigest() * 40

    # 4 at a time: the host allows 6, and a connection counts until both its ends have closed.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(stream, range(24)))


def test_a_client_that_says_nothing_is_closed_at_the_handshake_deadline(endpoint):
    with socket.create_connection((ADDRESS, endpoint.db), timeout=20) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""
        assert 5 < time.monotonic() - started < 15


def test_an_address_it_cannot_bind_is_reported_and_retried_while_the_agent_serves():
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = free_port_range(2, PORT_BASE + 560)
    holder.bind((ADDRESS, port))
    holder.listen()
    pool = AgentPool()
    try:
        agent = pool.start(
            env={"BERTH_ROUTER_LISTEN": f"{ADDRESS}:{port}", "BERTH_POOLER_LISTEN": f"{ADDRESS}:{port + 1}"}
        )
        # The router binds beside the serving agent, so its first attempt may not be reported yet.
        wait_for(lambda: agent.client().info().router.db.error != "not started", timeout=15, what="the first bind")
        router = agent.client().info().router
        assert not router.db.listening and "Address already in use" in router.db.error
        assert router.pooler.listening
        holder.close()
        wait_for(lambda: agent.client().info().router.db.listening, timeout=15, what="the router to bind once free")
    finally:
        holder.close()
        pool.close()


def test_the_table_survives_an_agent_restart_without_passwords_on_disk(endpoint):
    """Last in this module: it replaces the module's agent with a restarted one."""
    kept = (endpoint.agent.root / ".berth-router" / "routes.json").read_text()
    assert A in kept and PASSWORDS[A] not in kept and PASSWORDS[B] not in kept
    assert PASSWORDS[A] not in pgbouncer_ini(endpoint)
    endpoint.agent.stop()
    endpoint.agent = start_agent(endpoint.agent.root, env=endpoint.env)
    endpoint.pool.agents.append(endpoint.agent)
    wait_for(lambda: endpoint.agent.client().info().router.db.listening, timeout=15, what="the router")
    for ref in (A, B):
        with endpoint.direct(ref) as connection:
            assert port_of(connection) == endpoint.ports[ref]
    endpoint.pooled(2)
    with endpoint.by_user(A) as pooled:
        assert port_of(pooled) == endpoint.ports[A]


def test_without_openssl_the_agent_runs_and_the_router_says_it_has_no_certificate():
    pool = AgentPool()
    bin_dir = make_root()  # a PATH with what the process driver runs (as `postgres` too), and no openssl
    pool.folders.append(bin_dir)
    (bin_dir / "test").symlink_to(shutil.which("test"))
    try:
        agent = pool.start(env={"PATH": str(bin_dir)})
        router = agent.client().info().router
        assert router.db.listening and "install openssl" in router.db.error
        assert not router.pooler.listening and "install openssl" in router.pooler.error
    finally:
        pool.close()


def test_network_restrictions_hold_for_routed_clients_too(endpoint):
    # The router's clients reach the runtime from this host, which pg_hba.conf never restricts:
    # the router checks the client's own address against the project's ranges.
    endpoint.push(**{A: {"allowed_cidrs": ["10.0.0.0/8"]}})
    try:
        for connect in (endpoint.direct, endpoint.by_user):
            with pytest.raises(psycopg.OperationalError, match="network restrictions"):
                connect(A)
        with endpoint.direct(B) as connection:
            assert port_of(connection) == endpoint.ports[B]
        endpoint.push(**{A: {"allowed_cidrs": ["127.0.0.0/8"]}})
        with endpoint.direct(A) as connection:
            assert port_of(connection) == endpoint.ports[A]
    finally:
        endpoint.push()
