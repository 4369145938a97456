"""`manage.py devsetup`: the local admin, owner of the default organization, and the `local`
host; what was set by hand is never put back silently."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from berth.env import parse_repository_url
from hosts.models import RuntimeHost
from orgs.models import DEFAULT_ORGANIZATION_SLUG, Membership, Role

pytestmark = pytest.mark.django_db


def test_it_registers_the_local_host_on_the_ports_asked(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("devsetup", agent_url="http://127.0.0.1:30101", runtime_ports=(30200, 30239))
    host = RuntimeHost.objects.get(name="local")
    assert (host.agent_url, host.port_range_start, host.port_range_end) == ("http://127.0.0.1:30101", 30200, 30239)
    assert host.agent_token == (tmp_path / "agent-token").read_text().strip()


def test_it_keeps_an_agent_url_and_range_set_by_hand_when_not_asked(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("devsetup")
    RuntimeHost.objects.filter(name="local").update(agent_url="http://127.0.0.1:9999", port_range_end=20999)
    capsys.readouterr()
    call_command("devsetup")
    host = RuntimeHost.objects.get(name="local")
    assert host.agent_url == "http://127.0.0.1:9999" and host.port_range_end == 20999
    assert "Changed" not in capsys.readouterr().out


def test_it_says_what_it_changes(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("devsetup")
    capsys.readouterr()
    call_command("devsetup", agent_url="http://127.0.0.1:30101", runtime_ports=(30200, 30239))
    out = capsys.readouterr().out
    assert "agent URL http://127.0.0.1:8470 -> http://127.0.0.1:30101" in out
    assert "runtime ports 20000-21999 -> 30200-30239" in out


def test_it_refuses_a_range_that_breaks_the_host_rules(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("devsetup")
    with pytest.raises(CommandError, match="cannot change runtime host 'local'"):
        call_command("devsetup", runtime_ports=(20000, 20005))
    assert RuntimeHost.objects.get(name="local").port_range_end == 21999


def test_a_bad_range_argument_is_refused(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    with pytest.raises(CommandError, match="is not FIRST-LAST"):
        call_command("devsetup", "--runtime-ports", "30200")


def test_it_makes_the_local_admin_owner_of_the_default_organization_idempotently():
    for _ in range(2):
        call_command("devsetup", stdout=StringIO())
    membership = Membership.objects.select_related("user", "organization").get()
    assert membership.user.username == "admin"
    assert membership.organization.slug == DEFAULT_ORGANIZATION_SLUG
    assert membership.role == Role.OWNER


def test_it_makes_the_default_backup_folder_under_var_and_never_a_folder_elsewhere(settings, tmp_path, capsys):
    """A new user's projects archive into var/backups from their first start; a folder
    repository anywhere else is a mount the operator provides, and is never made."""
    settings.VAR_DIR = tmp_path / "var"
    settings.BERTH_BACKUP_URL = parse_repository_url(f"file://{tmp_path}/var/backups")
    call_command("devsetup")
    assert (tmp_path / "var" / "backups").is_dir()
    assert f"Backups go to file://{tmp_path}/var/backups" in capsys.readouterr().out

    settings.BERTH_BACKUP_URL = parse_repository_url(f"file://{tmp_path}/nfs/backups")
    call_command("devsetup")
    assert not (tmp_path / "nfs").exists()
