"""The three-way merge, table by table: base (recorded), host, new rendering."""

import pytest

from templating.render import RenderedRuntime, sha256
from templating.resync import (
    ADD,
    CONFLICT,
    KEEP,
    KEEP_DROPPED_EDITED,
    REMOVE,
    SKIP_SEED,
    SKIP_USER,
    UNCHANGED,
    WRITE,
    plan_resync,
)

A, B, C = b"port = 1\n", b"port = 2\n", b"port = 3  # edited\n"


def rendering(files: dict[str, tuple[bytes, str]], user_paths=("data/**",)) -> RenderedRuntime:
    return RenderedRuntime(
        files={p: content for p, (content, _) in files.items()},
        policies={p: policy for p, (_, policy) in files.items()},
        user_paths=tuple(user_paths),
        digests={p: sha256(content) for p, (content, _) in files.items()},
    )


def action_for(old: bytes | None, host: bytes | None, new: bytes | None, *, policy="managed", old_policy="managed"):
    old_rendered = rendering({"f": (old, old_policy)} if old is not None else {})
    new_rendered = rendering({"f": (new, policy)} if new is not None else {})
    recorded = {"f": sha256(old)} if old is not None and old_policy == "managed" else {}
    plan = plan_resync(old_rendered, recorded, {"f": sha256(host) if host is not None else None}, new_rendered)
    (action,) = plan.actions
    return action


@pytest.mark.parametrize(
    ("old", "host", "new", "expected"),
    [
        (A, A, A, UNCHANGED),  # nothing changed anywhere
        (A, A, B, WRITE),  # unchanged on the host: replaced
        (A, C, A, KEEP),  # unchanged in the template: the local edit stays
        (A, C, B, CONFLICT),  # changed in both
        (A, B, B, UNCHANGED),  # the host already holds the new file
        (A, None, B, CONFLICT),  # deleted on the host, changed in the template
        (A, None, A, KEEP),  # deleted on the host, unchanged in the template: stays deleted
    ],
)
def test_it_merges_managed_files_three_ways(old, host, new, expected):
    assert action_for(old, host, new).action == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [(None, ADD), (B, UNCHANGED), (C, CONFLICT)],
)
def test_it_adds_new_managed_files_unless_the_host_holds_another(host, expected):
    assert action_for(None, host, B).action == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [(A, REMOVE), (C, KEEP_DROPPED_EDITED), (None, UNCHANGED)],
)
def test_it_removes_dropped_files_only_when_unchanged_on_the_host(host, expected):
    assert action_for(A, host, None).action == expected


@pytest.mark.parametrize(
    ("old", "host", "expected"),
    [
        (None, None, ADD),  # a seed file new to the template is written once
        (None, C, SKIP_SEED),  # ... but never over a file already there
        (A, C, SKIP_SEED),  # once written it is the user's, edited or not
        (A, A, SKIP_SEED),
        (A, None, SKIP_SEED),  # and a deleted one stays deleted
    ],
)
def test_it_writes_seed_files_once_and_never_touches_them_again(old, host, expected):
    assert action_for(old, host, B, policy="seed", old_policy="seed").action == expected


def test_it_never_touches_seed_files_the_template_dropped():
    assert action_for(A, A, None, old_policy="seed").action == SKIP_SEED


def test_it_never_touches_user_paths_even_when_berth_once_managed_them():
    old = rendering({"data/app.conf": (A, "managed")}, user_paths=())
    new = rendering({}, user_paths=("data/**",))
    plan = plan_resync(old, {"data/app.conf": sha256(A)}, {"data/app.conf": sha256(A)}, new)
    assert [(a.path, a.action) for a in plan.actions] == [("data/app.conf", SKIP_USER)]
    assert not plan.changes_files


def test_it_reports_a_conflict_with_the_template_diff_and_plans_nothing_else_away():
    old = rendering({"a.conf": (A, "managed"), "b.conf": (A, "managed")})
    new = rendering({"a.conf": (B, "managed"), "b.conf": (B, "managed")})
    recorded = {"a.conf": sha256(A), "b.conf": sha256(A)}
    plan = plan_resync(old, recorded, {"a.conf": sha256(C), "b.conf": sha256(A)}, new, old_label="r1", new_label="r2")
    (conflict,) = plan.conflicts
    assert conflict.path == "a.conf" and conflict.reason == "edited on the host and changed in the template"
    assert "-port = 1\n+port = 2\n" in conflict.diff and conflict.diff.startswith("--- a.conf (r1)\n+++ a.conf (r2)\n")
    # b.conf alone would be written; the caller applies nothing while any conflict stands.
    assert plan.pushes == ["b.conf"]


def test_it_records_the_new_rendering_as_the_next_base_for_every_managed_file():
    old = rendering({"kept": (A, "managed"), "written": (A, "managed"), "seed": (A, "seed")})
    new = rendering({"kept": (A, "managed"), "written": (B, "managed"), "seed": (B, "seed"), "added": (C, "managed")})
    recorded = {"kept": sha256(A), "written": sha256(A)}
    host = {"kept": sha256(C), "written": sha256(A), "seed": sha256(A), "added": None}
    plan = plan_resync(old, recorded, host, new)
    assert plan.new_digests == {"kept": sha256(A), "written": sha256(B), "added": sha256(C)}
    assert plan.pushes == ["added", "written"] and plan.removals == []
