"""Agent stand-ins shared by the tests.

`InfoAgent` stands in for `hosts.agents.client_for` in process and answers only `info()`, as a
host's agent does when Berth asks what it runs (placement, creation, `hosts refresh`, the
admin's first contact). `agent_info()` is that reply, by field name.

`StandInAgent` is an agent on loopback that answers some calls like the real agent and hangs
on the rest. For the deadlines of later steps: an agent that answers placement and the file
push, then never answers `up` (or a health probe, or the stop after failed probes), as a
wedged Docker daemon or a stuck cluster would make it.
"""

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent.api import AgentInfo
from agent.client import AgentUnreachable

INFO = {
    "agent_version": "0.0.0-standin",
    "api_version": 1,
    "driver": "process",
    "probe_host": "127.0.0.1",
    "probe_host_source": "loopback",
    "postgres_versions": [14, 15, 16, 17, 18],
    "compose": None,
}


def agent_info(**fields) -> AgentInfo:
    """What a process agent with local PostgreSQL 15 reports on /v1/info; `fields` replace its values."""
    values = {
        "agent_version": "0.1.0",
        "api_version": 1,
        "driver": "process",
        "probe_host": "127.0.0.1",
        "probe_host_source": "loopback",
        "postgres_versions": [15],
        "compose": None,
        "ephemeral_ports": [32768, 60999],
    }
    return AgentInfo(**{**values, **fields})


class InfoAgent:
    """A `hosts.agents.client_for` stand-in whose agents answer `info()` only.

    `versions` is the local PostgreSQL majors every host's agent reports, None for an agent that
    does not answer (a refused connection), or a dict of either by host name. `fields` go to
    `agent_info`. `asked` and `deadlines` record each host asked for, in order.
    """

    def __init__(self, versions, **fields):
        self.versions, self.fields = versions, fields
        self.asked: list[str] = []
        self.deadlines: list[float] = []

    def __call__(self, host, *, deadline):
        self.asked.append(host.name)
        self.deadlines.append(deadline)
        self.host = host
        return self

    def info(self) -> AgentInfo:
        versions = self.versions[self.host.name] if isinstance(self.versions, dict) else self.versions
        if versions is None:
            raise AgentUnreachable(f"GET {self.host.agent_url}/v1/info: connection refused")
        return agent_info(postgres_versions=versions, **self.fields)


def call_name(method: str, path: str) -> str:
    """info, files, digests, up, down, restart, status, delete, ports, health."""
    if path == "/v1/info":
        return "info"
    if path == "/v1/health":
        return "health"
    if path == "/v1/ports/check":
        return "ports"
    if method == "DELETE":
        return "delete"
    match = re.fullmatch(r"/v1/runtimes/[a-z0-9]+/(\w+)", path.split("?")[0])
    return match.group(1) if match else "unknown"


class StandInAgent:
    """Answers the calls named in `answers`; every other call is held open until close().

    `probe_status` is what every probe reports when health is answered. `calls` records the
    name of each call as it arrives.
    """

    def __init__(self, answers, probe_status: str = "pass"):
        self.answers = set(answers)
        self.probe_status = probe_status
        self.calls: list[str] = []
        self.closed = threading.Event()
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                name = call_name(self.command, self.path)
                agent.calls.append(name)
                if name not in agent.answers:
                    while not agent.closed.wait(0.2):
                        pass
                    return
                reply = json.dumps(agent.reply(name, body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def reply(self, name: str, body: dict) -> dict:
        if name == "info":
            return INFO
        if name == "files":
            return {
                "digests": {
                    f["path"]: hashlib.sha256(base64.b64decode(f["content_b64"])).hexdigest() for f in body["files"]
                }
            }
        if name in ("up", "restart"):
            return {"state": "running", "output_tail": ""}
        if name == "down":
            return {"state": "stopped", "output_tail": ""}
        if name == "health":
            return {
                "results": [
                    {"name": p["name"], "status": self.probe_status, "detail": "stand-in", "server_major": None}
                    for p in body["probes"]
                ]
            }
        raise AssertionError(f"the stand-in has no answer for {name}")

    def wait_for_call(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while name not in self.calls and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()
