"""The real stack for the Management API interop tests, driven by the official Supabase CLI and
supabase-management-js, both pinned in package.json / package-lock.json here (`npm ci`).

Without node or the installed packages every test here is skipped, loudly."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

INTEROP = Path(__file__).resolve().parent
CLI = INTEROP / "node_modules" / ".bin" / "supabase"
MANAGEMENT_JS = INTEROP / "node_modules" / "supabase-management-js"
PASSWORD = "Correct-Horse-Battery-42"


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not CLI.exists() or not MANAGEMENT_JS.exists():
        return "the pinned npm packages are missing; run `npm ci` in tests/interop (scripts/test does)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"SUPABASE CLI INTEROP TESTS SKIPPED: {reason}")
    for item in items:
        if INTEROP in Path(item.fspath).parents:
            item.add_marker(skip)


class Stack:
    """A live Berth (web in a thread, a qcluster worker, a real agent with the process driver)."""

    def __init__(self, live_server, host, agent, tmp_path):
        self.url = live_server.url
        self.host = host
        self.agent = agent
        self.tmp_path = tmp_path
        self.profile = tmp_path / "berth-profile.yaml"
        self.profile.write_text(
            "name: berth\n"
            f"api_url: {self.url}\n"
            f"dashboard_url: {self.url}\n"
            "project_host: berth.localhost\n"
            "pooler_host: berth.localhost\n"
        )
        self.home = tmp_path / "home"
        self.home.mkdir()

    def cli(self, *args, token: str, cwd: Path | None = None, check: bool = True, **env) -> subprocess.CompletedProcess:
        environment = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "SUPABASE_ACCESS_TOKEN": token,
            "DO_NOT_TRACK": "1",
            **env,
        }
        result = subprocess.run(
            [str(CLI), "--profile", str(self.profile), *args],
            cwd=cwd or self.tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"supabase {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def cli_json(self, *args, token: str, **kwargs):
        return json.loads(self.cli(*args, "-o", "json", token=token, **kwargs).stdout)

    def management_js(self, action: str, *args: str, token: str) -> dict:
        result = subprocess.run(
            ["node", str(INTEROP / "management_js.mjs"), action, *args],
            cwd=INTEROP,
            env={"PATH": os.environ["PATH"], "BERTH_API_URL": self.url, "BERTH_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"management_js.mjs {action} exited {result.returncode}: {result.stderr}")
        return json.loads(result.stdout)


@pytest.fixture
def stack(live_server, agent_factory, tmp_path):
    from hosts.actions import refresh_host
    from tests.stack import Worker, agent_host

    agent = agent_factory()
    host = agent_host(agent)
    # As staff checking the host page would: the agent reports what it can run (Postgres 15 here).
    assert refresh_host(host, deadline=10)
    worker = Worker(tmp_path, BERTH_OPERATION_DEADLINE=60, BERTH_AGENT_CALL_DEADLINE=20)
    yield Stack(live_server, host, agent, tmp_path)
    worker.stop()
