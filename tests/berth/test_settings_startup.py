"""Startup with bad settings stops with a message naming the variable; good production
settings pass Django's deployment checks; models and migrations agree."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.stack import ROOT

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 20 + "production-like-secret-key-" + "y" * 30,
    "BERTH_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "ALLOWED_HOSTS": "berth.example.com",
    "DATABASE_URL": "sqlite:////tmp/berth-check.sqlite3",
}


def manage(*args, env_overrides, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BERTH_", "Q_"))}
    env.pop("DEBUG", None)
    env.pop("SECRET_KEY", None)
    env.pop("DATABASE_URL", None)
    env["BERTH_VAR_DIR"] = str(tmp_path)
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_it_refuses_to_start_without_secret_key_in_production(tmp_path):
    env = dict(PRODUCTION_ENV)
    del env["SECRET_KEY"]
    result = manage("check", env_overrides=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is required when DEBUG is off" in result.stderr


def test_it_names_the_variable_with_a_bad_value(tmp_path):
    result = manage("check", env_overrides={**PRODUCTION_ENV, "DEBUG": "perhaps"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr


def test_it_refuses_an_operation_deadline_shorter_than_a_call_and_the_cleanup_reserve(tmp_path):
    env = {**PRODUCTION_ENV, "BERTH_OPERATION_DEADLINE": "12", "BERTH_AGENT_CALL_DEADLINE": "5"}
    result = manage("check", env_overrides=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "BERTH_OPERATION_DEADLINE=12 leaves no time to work" in result.stderr
    assert "BERTH_AGENT_CALL_DEADLINE (5)" in result.stderr


def test_it_refuses_a_task_timeout_shorter_than_the_operation_deadline(tmp_path):
    env = {**PRODUCTION_ENV, "BERTH_OPERATION_DEADLINE": "600", "Q_TIMEOUT": "300"}
    result = manage("check", env_overrides=env, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "Q_TIMEOUT must be longer than BERTH_OPERATION_DEADLINE" in result.stderr


def test_it_refuses_a_bad_encryption_key(tmp_path):
    result = manage("check", env_overrides={**PRODUCTION_ENV, "BERTH_ENCRYPTION_KEY": "short"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "BERTH_ENCRYPTION_KEY is not a valid Fernet key" in result.stderr


def test_development_generates_and_keeps_secrets_under_var(tmp_path):
    first = manage("check", env_overrides={"DEBUG": "1"}, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret-key").read_text()
    second = manage("check", env_overrides={"DEBUG": "1"}, tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "secret-key").read_text() == key
    assert (tmp_path / "secret-key").stat().st_mode & 0o077 == 0


def test_deploy_check_passes_with_production_settings(tmp_path):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env_overrides=PRODUCTION_ENV, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_models_and_migrations_agree(tmp_path):
    result = manage("makemigrations", "--check", "--dry-run", env_overrides={"DEBUG": "1"}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"BERTH_AGENT_CALL_DEADLINE": "600", "BERTH_OPERATION_DEADLINE": "600"},
            "BERTH_AGENT_CALL_DEADLINE must be shorter than BERTH_OPERATION_DEADLINE",
        ),
        (
            {"BERTH_AGENT_CALL_DEADLINE": "90", "BERTH_OPERATION_DEADLINE": "60"},
            "BERTH_AGENT_CALL_DEADLINE must be shorter than BERTH_OPERATION_DEADLINE",
        ),
        (
            {"BERTH_OPERATION_DEADLINE": "600", "Q_TIMEOUT": "600"},
            "Q_TIMEOUT must be longer than BERTH_OPERATION_DEADLINE",
        ),
        (
            {"BERTH_BACKUP_DEADLINE": "3600", "Q_TIMEOUT": "3600"},
            "Q_TIMEOUT must be longer than BERTH_BACKUP_DEADLINE",
        ),
        (
            {"BERTH_OPERATION_DEADLINE": "600", "BERTH_BACKUP_DEADLINE": "300"},
            "BERTH_BACKUP_DEADLINE must be at least BERTH_OPERATION_DEADLINE",
        ),
        (
            {"BERTH_BACKUP_DEADLINE": "600", "Q_TIMEOUT": "700", "Q_RETRY": "700"},
            "Q_RETRY must be longer than Q_TIMEOUT",
        ),
        (
            {"BERTH_BACKUP_DEADLINE": "600", "Q_TIMEOUT": "700", "Q_RETRY": "650"},
            "Q_RETRY must be longer than Q_TIMEOUT",
        ),
    ],
    ids=[
        "call-equals-operation",
        "call-past-operation",
        "timeout-equals-operation",
        "timeout-equals-backup",
        "backup-shorter-than-operation",
        "retry-equals-timeout",
        "retry-before-timeout",
    ],
)
def test_it_refuses_each_broken_time_order_naming_the_variables(tmp_path, overrides, message):
    result = manage("check", env_overrides={**PRODUCTION_ENV, **overrides}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_it_starts_with_the_time_order_kept_at_its_edges(tmp_path):
    env = {
        **PRODUCTION_ENV,
        "BERTH_AGENT_CALL_DEADLINE": "44.9",
        "BERTH_OPERATION_DEADLINE": "60",
        "BERTH_BACKUP_DEADLINE": "60",
        "Q_TIMEOUT": "61",
        "Q_RETRY": "62",
    }
    result = manage("check", env_overrides=env, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_manage_py_as_written_in_the_docs_runs_outside_the_venv_and_without_debug(tmp_path):
    # `./manage.py templates sync`, as the pages say, from a shell that has not activated .venv:
    # the checkout's .venv is found and, with no SECRET_KEY set, the checkout is development.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BERTH_", "Q_", "VIRTUAL_ENV"))}
    for name in ("DEBUG", "SECRET_KEY", "BERTH_ENCRYPTION_KEY", "DATABASE_URL"):
        env.pop(name, None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    env["BERTH_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        ["./manage.py", "templates", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "sync" in result.stdout
    assert (tmp_path / "secret-key").exists()  # development secrets, kept under var/


def test_the_test_settings_remove_the_folder_they_made_and_keep_one_they_were_given(tmp_path):
    code = (
        "import os, django; django.setup(); from django.conf import settings; "
        "print(os.environ['BERTH_VAR_DIR']); settings.SECRET_KEY"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BERTH_"))}
    env.update(DJANGO_SETTINGS_MODULE="berth.test_settings", PYTHONPATH=str(ROOT / "platform"))
    made = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    folder = Path(made.stdout.strip())
    assert folder.name.startswith("berth-test-var-") and not folder.exists()
    given = subprocess.run(
        [sys.executable, "-c", code], env={**env, "BERTH_VAR_DIR": str(tmp_path)}, capture_output=True, timeout=120
    )
    assert given.returncode == 0, given.stderr
    assert (tmp_path / "secret-key").exists()
