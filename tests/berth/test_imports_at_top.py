"""Imports sit at the top of modules (docs/architecture.md): ruff's PLC0415, on in
pyproject.toml, holds for the code and reports an import inside a function."""

import subprocess
import sys
from pathlib import Path

from tests.stack import ROOT

RUFF = Path(sys.executable).parent / "ruff"

LATE_IMPORT = """def enqueue():
    from operations.models import Operation

    return Operation
"""


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RUFF), "check", "--no-cache", "--output-format", "concise", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_no_module_of_berth_imports_inside_a_function():
    result = ruff("--select", "PLC0415", "platform", "manage.py", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_projects_settings_report_an_import_inside_a_function():
    result = ruff("--stdin-filename", "platform/operations/late.py", "-", stdin=LATE_IMPORT)
    assert result.returncode == 1
    assert "PLC0415" in result.stdout
