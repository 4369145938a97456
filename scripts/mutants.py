"""Mutation check for the invariants docs/architecture.md names.

Each break listed in scripts/mutants.toml names a file, an exact snippet of it, the
snippet's broken replacement, and the tests that guard the invariant. On a scratch copy
of the working tree (never the tree itself), each break is applied alone, its guarding
tests run, and the file is restored. A break whose tests all pass SURVIVED: the suite
would not notice that regression.

Exit status: 0 when every break was killed; 1 when any survived, when a snippet no longer
matches its file exactly once (the list must follow the code), or when the guarding tests
fail on the unbroken tree.

Runs the tests with this checkout's .venv and the usual test settings (BERTH_TEST_DB,
BERTH_TEST_PORT_BASE, TEST_DATABASE_URL pass through).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "scripts" / "mutants.toml"
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutant:
    name: str
    invariant: str
    file: str
    original: str
    replacement: str
    tests: list[str]


def load(path: Path) -> list[Mutant]:
    data = tomllib.loads(path.read_text())
    mutants = [Mutant(**entry) for entry in data["mutant"]]
    names = [m.name for m in mutants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"{path}: duplicate names: {', '.join(duplicates)}")
    return mutants


def scratch_copy() -> Path:
    """The working tree as it is now (uncommitted changes included), in a temporary folder."""
    target = Path(tempfile.mkdtemp(prefix="berth-mutants-"))
    # As the checkout is: the clusters' user runs the agent's archive command from it.
    target.chmod(0o755)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, listed):
        source = ROOT / raw.decode()
        if not source.is_file():
            continue
        destination = target / raw.decode()
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination, follow_symlinks=False)
    (target / ".venv").symlink_to((ROOT / ".venv").resolve())
    # The PostgreSQL binaries scripts/postgres installed (untracked), as the agent finds them in a checkout.
    for installed in (ROOT / "pgbin").iterdir() if (ROOT / "pgbin").is_dir() else []:
        if not (target / "pgbin" / installed.name).exists():
            (target / "pgbin" / installed.name).symlink_to(installed.resolve())
    # A checkout of its own: `./manage.py` treats a git checkout as development, and tests run it.
    subprocess.run(["git", "init", "-q", str(target)], check=True)
    return target


def run_tests(tree: Path, tests: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [str(tree / ".venv" / "bin" / "python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_S}s"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode, lines[-1] if lines else ""


def check_snippets(mutants: list[Mutant]) -> list[str]:
    problems = []
    for m in mutants:
        path = ROOT / m.file
        if not path.is_file():
            problems.append(f"{m.name}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.name}: its snippet occurs {count} times in {m.file} (must be exactly once)")
        if m.original == m.replacement:
            problems.append(f"{m.name}: replacement equals the original")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/mutants",
        description="Break each invariant listed in scripts/mutants.toml, one at a time on a scratch copy "
        "of the tree, run its guarding tests, and report every break no test catches.",
    )
    parser.add_argument("--list", action="store_true", help="list the breaks and exit")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these breaks")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    parser.add_argument(
        "--file", type=Path, default=LIST, help=f"the list of breaks (default {LIST.relative_to(ROOT)})"
    )
    args = parser.parse_args()

    mutants = load(args.file)
    if args.list:
        for m in mutants:
            print(f"{m.name}\n    {m.invariant}\n    {m.file}; guarded by {len(m.tests)} test(s)")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in mutants})
        if unknown:
            print(f"unknown break(s): {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.name in args.only]

    problems = check_snippets(mutants)
    if problems:
        print("The list no longer matches the code:", *problems, sep="\n  ", file=sys.stderr)
        return 1

    started = time.monotonic()
    tree = scratch_copy()
    print(f"scratch copy: {tree}")
    try:
        guarding = sorted({test for m in mutants for test in m.tests})
        code, summary = run_tests(tree, guarding)
        print(f"baseline ({len(guarding)} test ids, unbroken tree): {summary}")
        if code != 0:
            print("The guarding tests fail on the unbroken tree; fix that first.", file=sys.stderr)
            return 1
        survivors, errors = [], []
        for i, m in enumerate(mutants, 1):
            path = tree / m.file
            original = path.read_text()
            path.write_text(original.replace(m.original, m.replacement, 1))
            began = time.monotonic()
            try:
                code, summary = run_tests(tree, m.tests)
            finally:
                path.write_text(original)
            took = time.monotonic() - began
            if code == 0:
                verdict = "SURVIVED"
                survivors.append(m)
            elif code in (1, -1):
                verdict = "killed" if code == 1 else "killed (timed out)"
            else:
                verdict = f"ERROR (pytest exit {code})"
                errors.append(m)
            print(f"[{i}/{len(mutants)}] {verdict:<9} {m.name} ({took:.0f}s): {summary}", flush=True)
        elapsed = time.monotonic() - started
        killed = len(mutants) - len(survivors) - len(errors)
        print(f"\n{len(mutants)} breaks: {killed} killed, {len(survivors)} survived, {len(errors)} errors")
        print(f"took {elapsed:.0f}s")
        for m in survivors:
            print(f"SURVIVED: {m.name}: {m.invariant}\n    {m.file}; tests: {' '.join(m.tests)}")
        for m in errors:
            print(f"ERROR: {m.name}: its tests did not run (bad test id?)")
        return 1 if survivors or errors else 0
    finally:
        if args.keep:
            print(f"kept {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
