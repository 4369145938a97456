"""Audit actions are named by constants (audit.models.Action): no caller writes one as a string."""

import ast
import re
from pathlib import Path

from audit.models import Action
from tests.stack import ROOT

PLATFORM = ROOT / "platform"
# Calls that take an audit action name: (function, position of the action argument).
NAMING_CALLS = {"record": 1, "token_used": 1}


def named_in_source(root: Path = PLATFORM) -> list[tuple[str, int, str]]:
    """Every audit-naming call whose action is a string literal or an f-string: (file, line, code)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = NAMING_CALLS.get(name)
            if position is None or len(node.args) <= position:
                continue
            action = node.args[position]
            if isinstance(action, ast.Constant | ast.JoinedStr):
                found.append((str(path.relative_to(root)), node.lineno, ast.unparse(action)))
    return found


def test_no_caller_names_an_action_with_a_string_of_its_own():
    assert named_in_source() == []


def test_the_check_finds_a_string_named_action(tmp_path):
    module = tmp_path / "sloppy.py"
    module.write_text('record(None, "project.resnyc", project=None)\ntoken_used(request, f"operation.{kind}")\n')
    assert [line for _, line, _ in named_in_source(tmp_path)] == [1, 2]


def test_every_action_is_one_dotted_lowercase_name_used_once():
    names = [value for key, value in vars(Action).items() if key.isupper()]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+", name) for name in names)
    assert Action.requested("restart") == "operation.restart"
