"""`manage.py hosts refresh [NAME ...]`: ask agents what they run and keep the answer."""

from io import StringIO
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from hosts.models import RuntimeHost
from tests.factories import make_host
from tests.standin_agent import InfoAgent

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command("hosts", *args, stdout=out)
    return out.getvalue()


def test_it_asks_every_host_and_keeps_what_it_reports():
    make_host(name="east", port_range_start=20000, port_range_end=20999)
    make_host(name="west", port_range_start=30000, port_range_end=34999)
    with mock.patch("hosts.agents.client_for", InfoAgent({"east": [15, 16], "west": [17]})):
        out = run("refresh")
    assert "east: process driver, local Postgres 15, 16, probe host 127.0.0.1" in out
    assert "west: process driver, local Postgres 17" in out
    assert "warning: west: ports 32768-34999 of the range lie in the kernel's ephemeral port range" in out
    assert "warning: east" not in out
    assert RuntimeHost.objects.get(name="east").postgres_versions == [15, 16]


def test_it_asks_only_the_named_hosts():
    make_host(name="east")
    make_host(name="west")
    with mock.patch("hosts.agents.client_for", InfoAgent({"east": [15]})):
        out = run("refresh", "east")
    assert "east:" in out and "west" not in out
    assert not RuntimeHost.objects.get(name="west").capabilities


def test_it_fails_when_an_agent_does_not_answer():
    make_host(name="east")
    with mock.patch("hosts.agents.client_for", InfoAgent({"east": None})), pytest.raises(CommandError, match="1 agent"):
        run("refresh")
    assert "connection refused" in RuntimeHost.objects.get(name="east").last_error


def test_it_refuses_an_unknown_host():
    with pytest.raises(CommandError, match="No such host: nowhere"):
        run("refresh", "nowhere")
