"""The database router: every project's database at one address per host, as the platform has it.

Two listeners, both speaking PostgreSQL's wire protocol (docs/architecture.md, "Database router"):
- the db address (`BERTH_ROUTER_LISTEN`, 5432): answers the SSLRequest, reads the TLS server
  name from the ClientHello without consuming it (MSG_PEEK) and, for `db.<ref>.<domain>`,
  splices the client to that runtime's own server, which then does the TLS handshake with
  its own certificate: the router never sees the stream. Any other name (the pooler's, or
  none) is terminated here and routed by the startup user `<role>.<ref>`, rewritten to
  `<role>`, straight to the runtime (a session, as Supavisor's port 5432).
- the pooler address (`BERTH_POOLER_LISTEN`, 6543): terminated here, routed by the startup
  user `<role>.<ref>`, rewritten to `<role>` with the database renamed to the ref, to this
  host's PgBouncer (transaction mode, agent.pooler).

Invariants:
- A connection is routed by what its client names, and only to that project's upstream:
  each connection owns its upstream socket and the two are spliced to each other alone, so
  no byte of one tenant's stream reaches another. Credentials are checked by the upstream
  (the project's own server, or PgBouncer against the project's own roles).
- Nothing before the splice waits without a deadline (HANDSHAKE_S); whatever the router
  refuses (an unknown name or ref, a paused project, a limit, an upstream that does not
  answer) gets a FATAL ErrorResponse, inside TLS with the router's certificate when the
  client asked for TLS. Never a hang, never a silent close.
- At most `max_connections` client connections at once on this host, and at most a
  route's `max_client_conn` per project (both addresses together).
- The route table is swapped whole (`set_table`); a connection routes on one table, and
  routes follow projects without a restart.
- An address that cannot be bound never stops the agent: its status says why and the
  router tries again every RETRY_S.
"""

import asyncio
import fcntl
import ipaddress
import logging
import os
import re
import socket
import ssl
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

from agent import api

log = logging.getLogger("agent.router")

SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102
PROTOCOL_3 = 196608
TLS_HANDSHAKE = 0x16
HANDSHAKE_S = 10.0  # SSLRequest, ClientHello, TLS handshake, startup and upstream connect, together
RETRY_S = 5.0  # how often an address that could not be bound is tried again
ACCEPT_RETRY_S = 0.1  # after an accept that failed (out of open files)
MAX_STARTUP = 10_000  # bytes; PostgreSQL's own limit on a startup packet
_PEEK_WAIT_S = 0.005
_ROLE_REF = re.compile(r"^(?P<role>.+)\.(?P<ref>[a-z][a-z0-9]{5,39})$")
_REF = r"[a-z][a-z0-9]{5,39}"


class Refused(Exception):
    """What the client is told, as a FATAL ErrorResponse with a SQLSTATE."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Table:
    """A snapshot of this host's routes; `pooled` are the refs PgBouncer serves now."""

    domain: str = ""
    routes: dict[str, api.RouteSpec] = field(default_factory=dict)
    pooled: frozenset[str] = frozenset()

    def db_name(self, server_name: str | None) -> str | None:
        """The ref a `db.<ref>.<domain>` server name names, else None."""
        if not server_name or not self.domain:
            return None
        match = re.fullmatch(rf"db\.({_REF})\.{re.escape(self.domain)}", server_name.lower().rstrip("."))
        return match.group(1) if match else None


@dataclass
class Listener:
    kind: str  # db | pooler
    host: str
    port: int
    sock: socket.socket | None = None
    error: str | None = "not started"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def status(self) -> api.ListenerStatus:
        return api.ListenerStatus(self.address, self.sock is not None, self.error)


class Router:
    """Runs both listeners on one asyncio loop in a thread of its own (`start`)."""

    def __init__(
        self,
        db: tuple[str, int],
        pooler: tuple[str, int],
        pgbouncer: tuple[str, int],
        tls: ssl.SSLContext | None,
        probe_host: str,
        max_connections: int,
        tls_error: str | None = None,
    ):
        self.listeners = [Listener("db", *db), Listener("pooler", *pooler)]
        self.pgbouncer = pgbouncer
        # None: no certificate could be had (tls_error says why). The pooler address then stays
        # shut, and on the db address only names of running projects are served.
        self.tls, self.tls_error = tls, tls_error
        self.probe_host = probe_host
        self.max_connections = max_connections
        self.table = Table()
        self.active = 0
        self.per_ref: Counter[str] = Counter()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="berth-router", daemon=True)

    # --- from other threads ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def set_table(self, table: Table) -> None:
        self.table = table  # one reference swap: a connection reads one table or the other

    def status(self, pgbouncer: api.ListenerStatus) -> api.RouterStatus:
        db, pooler = (listener.status() for listener in self.listeners)
        table = self.table
        return api.RouterStatus(
            db=db,
            pooler=pooler,
            pgbouncer=pgbouncer,
            routes=len(table.routes),
            pooled=len(table.pooled),
            connections=self.active,
            domain=table.domain or None,
        )

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)

    # --- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for listener in self.listeners:
            self.loop.create_task(self._listen(listener))
        self.loop.run_forever()

    async def _listen(self, listener: Listener) -> None:
        if self.tls is None and listener.kind == "pooler":
            listener.error = self.tls_error
            return
        while listener.sock is None:
            try:
                listener.sock = bind(listener.host, listener.port)
                listener.port = listener.sock.getsockname()[1]  # the real one when asked for port 0
                listener.error = self.tls_error
            except OSError as exc:
                reason = f"cannot listen on {listener.address}: {exc.strerror or exc}"
                if reason != listener.error:
                    log.warning("router %s address: %s; trying again every %gs", listener.kind, reason, RETRY_S)
                listener.error = reason
                await asyncio.sleep(RETRY_S)
        while True:
            try:
                client, _ = await self.loop.sock_accept(listener.sock)
            except OSError as exc:  # out of open files, say: the listener goes on once some close
                log.warning("router %s address: accept failed: %s", listener.kind, exc.strerror or exc)
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.loop.create_task(self._serve(client, listener.kind))

    async def _serve(self, client: socket.socket, kind: str) -> None:
        self.active += 1
        session = Session(self, client, kind)
        try:
            await session.run()
        except Exception:
            log.exception("router: a %s connection failed", kind)
        finally:
            session.close()
            self.active -= 1
            if session.ref is not None:
                self.per_ref[session.ref] -= 1
                if self.per_ref[session.ref] <= 0:
                    del self.per_ref[session.ref]


class Session:
    """One client connection: negotiate, route, then splice until either side closes."""

    def __init__(self, router: Router, client: socket.socket, kind: str):
        self.router = router
        self.loop = router.loop
        self.client = client
        self.kind = kind
        self.table = router.table
        self.ref: str | None = None  # counted against the route's limit once set
        self.inbound: Pipe | None = None  # the client's transport, once wrapped
        self.outbound: Pipe | None = None
        self.spliced: Splice | None = None  # a passed-through connection, moved by the kernel

    async def run(self) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_S):
                tls = await self.negotiate()
                if tls:
                    await self.route_tls()
        except TimeoutError:
            log.info("router: a %s connection did not finish its handshake within %gs", self.kind, HANDSHAKE_S)
            return
        except (ConnectionError, EOFError, ssl.SSLError, OSError):
            return  # the client went away or spoke nonsense; nothing to tell it
        if self.spliced is not None:
            await self.spliced.closed
        elif self.inbound and self.outbound:
            await asyncio.gather(self.inbound.closed, self.outbound.closed)

    def close(self) -> None:
        for pipe in (self.inbound, self.outbound):
            if pipe and pipe.transport:
                pipe.transport.close()
        if self.spliced is not None:
            self.spliced.close()
        elif self.inbound is None:
            self.client.close()

    # --- before TLS ------------------------------------------------------------------------------
    async def negotiate(self) -> bool:
        """Answer the SSLRequest (GSSENC is declined); True when TLS follows.

        A client that opens with TLS at once (PostgreSQL 17's direct negotiation) is TLS too.
        A plaintext startup is refused in plaintext: passwords never cross the router unencrypted."""
        while True:
            first = await peek(self.loop, self.client, 1)
            if first[0] == TLS_HANDSHAKE:
                return True
            length, code = struct.unpack("!II", await recv_exact(self.loop, self.client, 8))
            if length == 8 and code == SSL_REQUEST:
                await self.loop.sock_sendall(self.client, b"S")
                return True
            if length == 8 and code == GSSENC_REQUEST:
                await self.loop.sock_sendall(self.client, b"N")
                continue
            if length == 16 and code == CANCEL_REQUEST:
                return False  # no route carries cancel keys: see "Database router" in the architecture
            if not 8 <= length <= MAX_STARTUP:
                return False
            await recv_exact(self.loop, self.client, length - 8)
            refusal = Refused("28000", "SSL connection is required: connect with sslmode=require (or prefer)")
            await self.loop.sock_sendall(self.client, error_response(refusal))
            return False

    # --- after the SSLRequest ------------------------------------------------------------------
    async def route_tls(self) -> None:
        hello = await peek_client_hello(self.loop, self.client)
        ref = self.table.db_name(server_name(hello)) if self.kind == "db" else None
        if ref is not None:
            await self.pass_through(ref)
        else:
            await self.terminate()

    async def pass_through(self, ref: str) -> None:
        """`db.<ref>.<domain>`: the runtime's own server does TLS with the client."""
        try:
            route = self.admit(ref)
            upstream = await self.connect(route.host or self.router.probe_host, route.port, ref)
        except Refused as refusal:
            await self.refuse_in_tls(refusal)
            return
        try:
            await self.loop.sock_sendall(upstream, struct.pack("!II", 8, SSL_REQUEST))
            answer = await recv_exact(self.loop, upstream, 1)
        except (ConnectionError, EOFError, OSError):
            upstream.close()
            await self.refuse_in_tls(Refused("57P03", f"the database of project {ref} is not answering"))
            return
        if answer == b"S":
            self.spliced = Splice(self.loop, self.client, upstream)
            return
        # A runtime without TLS: the router does the client's TLS and relays the rest as it is.
        self.inbound = await self.end_tls()
        self.outbound = await wrap(self.loop, upstream)
        link(self.inbound, self.outbound)

    async def terminate(self) -> None:
        """Any other name: TLS ends here, and the startup user `<role>.<ref>` says where to go."""
        self.inbound = await self.end_tls()
        startup = await read_startup(self.inbound)
        try:
            params = parse_startup(startup)
            host, port, params = self.pooled_target(params) if self.kind == "pooler" else self.session_target(params)
            upstream = await self.connect(host, port, self.ref)
        except Refused as refusal:
            self.inbound.transport.write(error_response(refusal))
            return
        self.outbound = await wrap(self.loop, upstream)
        self.outbound.transport.write(startup_message(params))
        link(self.inbound, self.outbound)

    def session_target(self, params: dict[str, str]) -> tuple[str, int, dict[str, str]]:
        role, ref = split_user(params, self.table.domain)
        route = self.admit(ref)
        return route.host or self.router.probe_host, route.port, {**params, "user": role}

    def pooled_target(self, params: dict[str, str]) -> tuple[str, int, dict[str, str]]:
        role, ref = split_user(params, self.table.domain)
        self.admit(ref)
        if params.get("database", role) != "postgres":
            raise Refused("3D000", "the pooler serves the database postgres; connect to db.<ref> for others")
        if ref not in self.table.pooled:
            raise Refused("57P03", f"the pooler is being prepared for project {ref}; try again in a few seconds")
        host, port = self.router.pgbouncer
        return host, port, {**params, "user": role, "database": ref}

    def admit(self, ref: str) -> api.RouteSpec:
        """The project's route, counted against its limits; refused when unknown, paused or full."""
        route = self.table.routes.get(ref)
        if route is None:
            raise Refused("08004", f"Tenant or user not found: no project {ref} on this host")
        if route.paused:
            raise Refused("57P03", f"project {ref} is paused; restore it to connect")
        if route.allowed_cidrs is not None and not allowed(self.client, route.allowed_cidrs):
            raise Refused("28000", f"project {ref} does not allow connections from this address (network restrictions)")
        if self.router.active > self.router.max_connections:
            raise Refused("53300", f"too many connections on this host (at most {self.router.max_connections})")
        if self.router.per_ref[ref] >= route.max_client_conn:
            raise Refused("53300", f"too many connections for project {ref} (max_client_conn {route.max_client_conn})")
        self.router.per_ref[ref] += 1
        self.ref = ref
        return route

    async def connect(self, host: str, port: int, ref: str | None) -> socket.socket:
        try:
            infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await self.loop.sock_connect(sock, address)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            what = f"project {ref}'s database" if ref else "the pooler"
            raise Refused("57P03", f"{what} is not answering ({exc.strerror or exc})") from None
        return sock

    async def end_tls(self) -> "Pipe":
        """TLS with the client ends here, with the router's certificate (none: the connection closes)."""
        if self.router.tls is None:
            raise EOFError
        return await wrap(self.loop, self.client, self.router.tls)

    async def refuse_in_tls(self, refusal: Refused) -> None:
        """The client is mid-handshake: finish it with the router's certificate, then say why."""
        self.inbound = await self.end_tls()
        await read_startup(self.inbound)
        self.inbound.transport.write(error_response(refusal))


def allowed(client: socket.socket, cidrs: list[str]) -> bool:
    """Whether the client's address is in one of the ranges (an IPv4 client of a dual-stack
    listener, ::ffff:a.b.c.d, counts as a.b.c.d)."""
    address = ipaddress.ip_address(client.getpeername()[0].split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


class Pipe(asyncio.Protocol):
    """One side of a spliced pair. Until linked it buffers what arrives (the handshake reads
    it); once linked, everything goes to its peer and nowhere else, with flow control both ways."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.transport.write(data)
            return
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._wake()
        return False  # close this side; connection_lost closes the peer

    def connection_lost(self, exc) -> None:
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # after flushing what it was given

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.resume_reading()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if self.transport.is_closing() or self.closed.done():
                raise EOFError
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data


class Splice:
    """A passed-through connection: bytes move between the two sockets inside the kernel
    (splice(2) through a pipe per direction), never copied into Python. Each direction reads
    its source only while its pipe is empty, so a slow reader holds back its writer (flow
    control), and an end of stream is passed on as a half-close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, a: socket.socket, b: socket.socket):
        self.loop = loop
        self.sockets = (a, b)
        self.closed = loop.create_future()
        self.ways = [_Way(self, a, b), _Way(self, b, a)]

    def way_done(self) -> None:
        if all(way.done for way in self.ways):
            self.close()

    def close(self) -> None:
        for way in self.ways:
            way.stop()
        for sock in self.sockets:
            sock.close()
        if not self.closed.done():
            self.closed.set_result(None)


_SPLICE_CHUNK = 1 << 20
_SPLICE_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class _Way:
    def __init__(self, splice: Splice, src: socket.socket, dst: socket.socket):
        self.splice, self.loop = splice, splice.loop
        self.src, self.dst = src.fileno(), dst.fileno()
        self.dst_socket = dst
        self.read_end, self.write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:  # a larger pipe moves more per wakeup; the default (64 KiB) stays if refused
            fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, _SPLICE_CHUNK)
        except OSError:
            pass
        self.pending = 0  # bytes in the pipe, not yet given to dst
        self.done = False
        self.loop.add_reader(self.src, self.readable)

    def readable(self) -> None:
        try:
            moved = os.splice(self.src, self.write_end, _SPLICE_CHUNK, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self.splice.close()
            return
        if moved == 0:  # end of stream: pass the half-close on
            self.loop.remove_reader(self.src)
            try:
                self.dst_socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.done = True
            self.splice.way_done()
            return
        self.pending += moved
        self.flush()

    def flush(self) -> None:
        while self.pending:
            try:
                self.pending -= os.splice(self.read_end, self.dst, self.pending, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                # dst is full: read no more from src until it drains.
                self.loop.remove_reader(self.src)
                self.loop.add_writer(self.dst, self.writable)
                return
            except OSError:
                self.splice.close()
                return

    def writable(self) -> None:
        self.flush()
        if not self.pending and not self.done:
            self.loop.remove_writer(self.dst)
            self.loop.add_reader(self.src, self.readable)

    def stop(self) -> None:
        if self.read_end < 0:
            return
        self.loop.remove_reader(self.src)
        self.loop.remove_writer(self.dst)
        os.close(self.read_end)
        os.close(self.write_end)
        self.read_end = self.write_end = -1


def link(a: Pipe, b: Pipe) -> None:
    """Splice two pipes: what either buffered goes to the other first, then everything."""
    a.peer, b.peer = b, a
    for side in (a, b):
        if side.buffer:
            side.peer.transport.write(bytes(side.buffer))
            side.buffer.clear()
        if side.closed.done():
            side.peer.transport.close()


async def wrap(loop: asyncio.AbstractEventLoop, sock: socket.socket, tls: ssl.SSLContext | None = None) -> Pipe:
    pipe = Pipe(loop)
    if tls is None:
        await loop.connect_accepted_socket(lambda: pipe, sock)
    else:
        await loop.connect_accepted_socket(lambda: pipe, sock, ssl=tls, ssl_handshake_timeout=HANDSHAKE_S)
    return pipe


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# --- the wire ----------------------------------------------------------------------------------


async def recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


async def peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    """The next n bytes the client sent, left in the socket for whoever reads it next."""
    while True:
        try:
            data = sock.recv(n, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        if data == b"":
            raise EOFError
        if data is not None and len(data) >= n:
            return data
        if data:
            # Part of it is here: readiness stays set, so wait a moment instead of for readiness.
            await asyncio.sleep(_PEEK_WAIT_S)
            continue
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), _settle, ready)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def peek_client_hello(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """The first TLS record (the ClientHello), peeked whole."""
    header = await peek(loop, sock, 5)
    if header[0] != TLS_HANDSHAKE:
        raise EOFError
    (length,) = struct.unpack("!H", header[3:5])
    return (await peek(loop, sock, 5 + length))[5:]


def server_name(hello: bytes) -> str | None:
    """The SNI host name of a ClientHello handshake message, or None (absent or malformed)."""
    try:
        if hello[0] != 1:  # ClientHello
            return None
        at = 4 + 2 + 32  # handshake header, client version, random
        at += 1 + hello[at]  # session id
        at += 2 + struct.unpack_from("!H", hello, at)[0]  # cipher suites
        at += 1 + hello[at]  # compression methods
        end = at + 2 + struct.unpack_from("!H", hello, at)[0]
        at += 2
        while at + 4 <= end:
            kind, size = struct.unpack_from("!HH", hello, at)
            at += 4
            if kind == 0:  # server_name: list length, then (type, length, name)
                name_type, name_length = struct.unpack_from("!BH", hello, at + 2)
                if name_type == 0:
                    return hello[at + 5 : at + 5 + name_length].decode("ascii")
                return None
            at += size
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None


async def read_startup(pipe: Pipe) -> bytes:
    """The client's startup message after TLS (the whole packet, length included)."""
    (length,) = struct.unpack("!I", await pipe.read_exact(4))
    if not 8 <= length <= MAX_STARTUP:
        raise EOFError
    return struct.pack("!I", length) + await pipe.read_exact(length - 4)


def parse_startup(packet: bytes) -> dict[str, str]:
    (code,) = struct.unpack_from("!I", packet, 4)
    if code != PROTOCOL_3:
        raise Refused("08P01", "only protocol 3.0 startup messages are routed (no cancel requests)")
    fields = packet[8:].split(b"\0")
    try:
        pairs = [field.decode() for field in fields[: len(fields) - 2]]
    except UnicodeDecodeError:
        raise Refused("08P01", "the startup message is not UTF-8") from None
    if len(pairs) % 2:
        raise Refused("08P01", "malformed startup message")
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def startup_message(params: dict[str, str]) -> bytes:
    body = struct.pack("!I", PROTOCOL_3)
    body += b"".join(key.encode() + b"\0" + value.encode() + b"\0" for key, value in params.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def split_user(params: dict[str, str], domain: str) -> tuple[str, str]:
    """`postgres.<ref>` -> ("postgres", ref): how a client names its project to the pooler."""
    user = params.get("user", "")
    match = _ROLE_REF.fullmatch(user)
    if match is None:
        raise Refused(
            "08004",
            "Tenant or user not found: connect as <role>.<ref> (postgres.<ref>), "
            f"or to db.<ref>.{domain or '<domain>'}",
        )
    return match.group("role"), match.group("ref")


def error_response(refusal: Refused) -> bytes:
    fields = [b"SFATAL", b"VFATAL", b"C" + refusal.code.encode(), b"M" + refusal.message.encode()]
    body = b"\0".join(fields) + b"\0\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body
