"""The import layers (pyproject.toml, [tool.importlinter]) hold, and the check fails on an
import that points up a layer."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "platform")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def copy_tree(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "platform", tmp_path / "platform", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_it_keeps_the_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "named"),
    [
        # templating is pure template logic: it never reaches the operations that run work.
        (
            "templating/manifest.py",
            "from operations.models import Operation",
            "templating.manifest -> operations.models",
        ),
        # hosts sit below ports: a host's range check reads blocks through the reverse relation.
        ("hosts/models.py", "from ports.models import PortBlock", "hosts.models -> ports.models"),
        # The agent runs on hosts without Django.
        ("agent/files.py", "import django", "agent.files -> django"),
    ],
)
def test_it_fails_on_an_upward_import(tmp_path, module, line, named):
    tree = copy_tree(tmp_path)
    path = tree / "platform" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert named in result.stdout
    assert "BROKEN" in result.stdout


def test_it_ignores_front_ends_inside_apps(tmp_path):
    """Admin modules and management commands may call any verb: they are front ends."""
    tree = copy_tree(tmp_path)
    path = tree / "platform" / "hosts" / "admin.py"
    path.write_text(path.read_text() + "\nfrom operations.actions import act_on_project  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
