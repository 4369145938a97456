"""Every control-plane variable the README's settings table documents is read, under that
name, into the setting of the same name, as the value given (not the default).

The table is the contract: a variable added there needs a sample value here (VALUES), so a
setting read under another name, or never read, fails. Agent variables (marked "(agent)")
are read by the agent's own configuration (tests/agent/test_config.py)."""

import json
import os
import re
import subprocess
import sys

from cryptography.fernet import Fernet

from tests.stack import ROOT

# Distinct, valid, non-default values; where settings check an order (operation deadline past
# a call and the cleanup reserve, Q_TIMEOUT past the operation deadline) the defaults keep it.
VALUES = {
    "BERTH_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "BERTH_AGENT_CALL_DEADLINE": 7.5,
    "BERTH_AGENT_PAGE_DEADLINE": 1.5,
    "BERTH_OPERATION_DEADLINE": 123,
    "BERTH_BACKUP_DEADLINE": 4000,
    "BERTH_QUEUE_DEADLINE": 77,
    "BERTH_REAPER_MINUTES": 2,
    "BERTH_HEALTH_REFRESH_MINUTES": 3,
    "BERTH_DRIFT_CHECK_MINUTES": 4,
    "BERTH_PORT_REPAIR_MINUTES": 5,
    "BERTH_METRICS_TOKEN": "metrics-token-0123456789",
    "BERTH_METRICS_COLLECT_MINUTES": 6,
    "BERTH_METRICS_RETENTION_HOURS": 7,
    "BERTH_ALERT_HOST_UNREACHABLE_MINUTES": 8,
    "BERTH_ALERT_CERT_DAYS": 9,
    "BERTH_ALERT_SEND_TIMEOUT": 2.5,
    "BERTH_ALERT_MAX_ATTEMPTS": 4,
    "BERTH_HEALTH_POLL_INITIAL": 0.5,
    "BERTH_HEALTH_POLL_MAX": 4.5,
    "BERTH_UNHEALTHY_AFTER": 5,
    "BERTH_UPGRADE_KEEP_DAYS": 10,
    "BERTH_PORT_COOLDOWN": 11,
    "BERTH_HOST_INFO_MAX_AGE": 12,
    "BERTH_HOST_THREADS": 13,
    "BERTH_API_RATE_LIMIT": 14,
    "BERTH_API_TEMPLATE": "supabase",
    "BERTH_DATABASE_DOMAIN": "db.example.org",
    "BERTH_POOLER_HOST": "pool.example.org",
    "BERTH_LOGIN_ROLE_TTL": 600,
    "BERTH_API_QUERY_DEADLINE": 3.5,
    "BERTH_API_QUERY_MAX_ROWS": 500,
    "BERTH_API_QUERY_MAX_BYTES": 4096,
    "BERTH_API_SETTINGS_DEADLINE": 45.5,
}
# Documented, but not a plain value to read back: the folder the harness itself sets.
NOT_READ_BACK = {"BERTH_VAR_DIR"}


def documented_control_plane_variables() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| variable | default | meaning |") :].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        variables, default = row.split(" | ")[0], row.split(" | ")[1]
        if "(agent)" not in default:
            names.update(re.findall(r"`(BERTH_[A-Z_]+)`", variables))
    return names


def test_every_documented_variable_has_a_sample_value():
    assert documented_control_plane_variables() - NOT_READ_BACK == set(VALUES)


def test_each_documented_variable_sets_its_setting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BERTH_", "Q_"))}
    for name in ("DEBUG", "SECRET_KEY", "DATABASE_URL"):
        env.pop(name, None)
    env.update(
        {
            "DEBUG": "0",
            "SECRET_KEY": "x" * 20 + "production-like-secret-key-" + "y" * 30,
            "ALLOWED_HOSTS": "berth.example.com",
            "DATABASE_URL": f"sqlite:///{tmp_path}/berth.sqlite3",
            "BERTH_VAR_DIR": str(tmp_path),
        }
    )
    env.update({name: str(value) for name, value in VALUES.items()})
    names = json.dumps(sorted(VALUES))
    code = (
        "import json\nfrom django.conf import settings\n"
        f"print(json.dumps({{n: getattr(settings, n) for n in {names}}}))"
    )
    command = [sys.executable, "manage.py", "shell", "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == VALUES
