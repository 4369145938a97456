"""Every agent variable the README's settings table documents (the rows marked "(agent)") is read,
under that name, into the agent's configuration, as the value given (not the default).

The table is the contract: a variable added there needs a sample here (READ), so a variable
read under another name, or never read, fails."""

import re
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent.parent
TOKEN = "a-token-long-enough-1234"


def read(tmp_path) -> dict:
    """Each variable -> (its sample value, what the configuration must then hold)."""
    return {
        "BERTH_AGENT_TOKEN": (TOKEN, lambda c: c.token == TOKEN),
        "BERTH_AGENT_LISTEN": ("127.0.0.1:18470", lambda c: (c.listen_host, c.listen_port) == ("127.0.0.1", 18470)),
        "BERTH_AGENT_ROOT": (str(tmp_path / "rt"), lambda c: c.root == (tmp_path / "rt").resolve()),
        "BERTH_AGENT_DRIVER": ("process", lambda c: c.driver == "process"),
        "BERTH_AGENT_POSTGRES_PATH": ("/opt/pg/17/bin", lambda c: c.postgres_path == ("/opt/pg/17/bin",)),
        "BERTH_AGENT_DEADLINE": ("42", lambda c: c.deadline_s == 42.0),
        "BERTH_AGENT_PROBE_HOST": ("127.0.0.2", lambda c: c.probe_host_override == "127.0.0.2"),
        "BERTH_AGENT_THREADS": ("4", lambda c: c.threads == 4),
        "BERTH_AGENT_CONNECTION_LIMIT": ("50", lambda c: c.connection_limit == 50),
        "BERTH_AGENT_MAX_BODY_MB": ("2", lambda c: c.max_body_bytes == 2 << 20),
        "BERTH_AGENT_IDLE_TIMEOUT": ("5", lambda c: c.idle_timeout_s == 5),
        "BERTH_ROUTER_LISTEN": ("127.0.0.1:15432", lambda c: c.router_listen == ("127.0.0.1", 15432)),
        "BERTH_POOLER_LISTEN": ("127.0.0.1:16543", lambda c: c.pooler_listen == ("127.0.0.1", 16543)),
        "BERTH_PGBOUNCER_LISTEN": ("127.0.0.1:16432", lambda c: c.pgbouncer_listen == ("127.0.0.1", 16432)),
        "BERTH_ROUTER_MAX_CONNECTIONS": ("300", lambda c: c.router_max_connections == 300),
        "BERTH_ROUTER_TLS_CERT_FILE": ("/etc/berth/r.crt", lambda c: c.router_tls_cert == Path("/etc/berth/r.crt")),
        "BERTH_ROUTER_TLS_KEY_FILE": ("/etc/berth/r.key", lambda c: c.router_tls_key == Path("/etc/berth/r.key")),
    }


# The alternative to BERTH_AGENT_TOKEN (only one may be set): read in its own test below.
ALTERNATIVES = {"BERTH_AGENT_TOKEN_FILE"}


def documented_agent_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| variable | default | meaning |") :].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        variables, default = row.split(" | ")[0], row.split(" | ")[1]
        if "(agent)" in default:
            names.update(re.findall(r"`(BERTH_[A-Z_]+)`", variables))
    return names


def test_every_documented_agent_variable_has_a_sample(tmp_path):
    assert documented_agent_variables() - ALTERNATIVES == set(read(tmp_path))


def test_each_documented_agent_variable_sets_the_configuration(tmp_path):
    samples = read(tmp_path)
    loaded = load_config({name: value for name, (value, _) in samples.items()})
    wrong = [name for name, (_, holds) in samples.items() if not holds(loaded)]
    assert wrong == []


def test_the_token_is_read_from_its_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    loaded = load_config({"BERTH_AGENT_TOKEN_FILE": str(path), "BERTH_AGENT_ROOT": str(tmp_path / "rt")})
    assert loaded.token == TOKEN


@pytest.mark.parametrize("only", ["BERTH_ROUTER_TLS_CERT_FILE", "BERTH_ROUTER_TLS_KEY_FILE"])
def test_the_router_certificate_needs_both_files(tmp_path, only):
    environ = {"BERTH_AGENT_TOKEN": TOKEN, "BERTH_AGENT_ROOT": str(tmp_path / "rt"), only: "/etc/berth/x.pem"}
    with pytest.raises(ConfigError, match="set both BERTH_ROUTER_TLS_CERT_FILE and BERTH_ROUTER_TLS_KEY_FILE"):
        load_config(environ)
