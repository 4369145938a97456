#!/usr/bin/env python3
"""Django's command-line utility for Berth.

Run as `./manage.py ...` from a checkout it needs nothing set up by hand: it re-runs itself
with the checkout's `.venv` (made by scripts/dev or scripts/test) when started by another
Python, and a checkout with no SECRET_KEY set is development (DEBUG=1, secrets under var/).
A deployment sets SECRET_KEY (production settings require it), so this never turns DEBUG on there.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# platform/ is a source root, not a package: it must never hold an __init__.py,
# or it would shadow the standard library's `platform` module.
sys.path.insert(0, str(ROOT / "platform"))


def use_checkout_venv() -> None:
    venv_python = ROOT / ".venv" / "bin" / "python"
    if not venv_python.exists() or Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        return
    os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])


def main():
    use_checkout_venv()
    if (ROOT / ".git").exists() and "DEBUG" not in os.environ and "SECRET_KEY" not in os.environ:
        os.environ["DEBUG"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berth.settings")
    # Only now: Django may be importable only in the checkout's .venv, re-run into above.
    from django.core.management import execute_from_command_line  # noqa: PLC0415

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
