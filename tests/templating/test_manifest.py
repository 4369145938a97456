from pathlib import Path

import pytest

from templating.manifest import ManifestError, parse_manifest
from templating.registry import read_template
from tests.stack import RUNTIMES

MINIMAL = """
[template]
driver = "process"

[ports]
db = 0

[postgres.versions.15]
local_major = 15

[[probes]]
name = "db"
kind = "postgres"
slot = "db"

[files."runtime.toml"]
policy = "managed"
render = "jinja"
"""


def write_template(root: Path, manifest: str, files: dict[str, str], name: str = "tiny") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(manifest)
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    return folder


def error_of(text: str) -> str:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(text, source="runtimes/tiny/manifest.toml")
    return str(raised.value)


def test_it_parses_ports_slots_and_probes_of_the_supabase_template():
    manifest = read_template(RUNTIMES / "supabase").manifest
    assert manifest.driver == "docker"
    assert manifest.ports["api"] == 0 and manifest.ports["db"] == 1
    assert set(manifest.ports) >= {
        "api",
        "db",
        "shadow_db",
        "studio",
        "inbucket",
        "smtp",
        "pop3",
        "analytics",
        "pooler",
    }
    assert manifest.slots_needed == max(manifest.ports.values()) + 1 == len(manifest.ports)
    assert manifest.postgres[15].image == "supabase/postgres:15.8.1.085"
    assert manifest.postgres[17].image == "supabase/postgres:17.6.1.132"
    assert {p.kind for p in manifest.probes} == {"postgres", "http", "tcp"}
    assert manifest.is_user_path("volumes/db/data/base/1/1259")


def test_it_parses_the_postgres_template_for_the_process_driver():
    manifest = read_template(RUNTIMES / "postgres").manifest
    assert manifest.driver == "process"
    assert manifest.ports == {"db": 0} and manifest.slots_needed == 1
    assert manifest.postgres[17].local_major == 17 and manifest.postgres[17].image is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('driver = "process"', 'driver = "podman"'), "template.driver: must be one of process, docker"),
        (("db = 0", "db = -1"), "ports.db: must be an integer >= 0"),
        (("db = 0", "db = 0\nDB = 1"), "ports.DB: slot names are lowercase"),
        (("db = 0", "db = 0\napi = 0"), "ports.api: offset 0 is already slot db"),
        (("local_major = 15", 'image = "x"'), "postgres.versions.15.image: unknown key"),
        (("[postgres.versions.15]", "[postgres.versions.fifteen]"), "postgres.versions.fifteen: a version key"),
        (('kind = "postgres"', 'kind = "smtp"'), "probes[0].kind: must be one of tcp, http, postgres"),
        (('slot = "db"', 'slot = "api"'), "probes[0].slot: 'api' is not a slot in [ports]"),
        (('policy = "managed"', 'policy = "mine"'), 'files."runtime.toml".policy: must be one of'),
        (('render = "jinja"', 'render = "mustache"'), 'files."runtime.toml".render: must be one of'),
        (("[template]", "[template]\ncolour = 1"), "template.colour: unknown key"),
        (('policy = "managed"', 'policy = "seed"'), "every template renders a managed runtime.toml"),
        (('driver = "process"', "driver = "), "not valid TOML"),
    ],
)
def test_it_names_the_file_and_key_of_every_manifest_error(change, expected):
    old, new = change
    message = error_of(MINIMAL.replace(old, new, 1))
    assert message.startswith("runtimes/tiny/manifest.toml: ")
    assert expected in message


def test_it_refuses_globs_outside_user_paths_and_user_paths_that_are_rendered():
    assert "only user paths may be globs" in error_of(MINIMAL + '[files."conf/*.conf"]\npolicy = "seed"\n')
    assert "never rendered" in error_of(MINIMAL + '[files."data/**"]\npolicy = "user"\nrender = "copy"\n')
    assert "normalised relative path" in error_of(MINIMAL + '[files."../etc/passwd"]\npolicy = "seed"\n')


def test_it_refuses_a_file_in_the_folder_that_the_manifest_does_not_list(tmp_path):
    folder = write_template(tmp_path, MINIMAL, {"runtime.toml": "x", "stray.conf": "y"})
    with pytest.raises(ManifestError, match=r"tiny/stray.conf: not listed in manifest.toml"):
        read_template(folder)


def test_it_refuses_a_listed_file_that_is_missing(tmp_path):
    folder = write_template(tmp_path, MINIMAL + '[files."README.md"]\npolicy = "seed"\n', {"runtime.toml": "x"})
    with pytest.raises(ManifestError, match=r'files."README.md": listed, but .*README.md does not exist'):
        read_template(folder)


def test_it_refuses_a_jinja_syntax_error_at_registration(tmp_path):
    folder = write_template(tmp_path, MINIMAL, {"runtime.toml": "port = {{ ports.db "})
    with pytest.raises(ManifestError, match=r"tiny/runtime.toml: line 1:"):
        read_template(folder)


def test_it_refuses_a_toml_set_key_the_file_does_not_have(tmp_path):
    manifest = MINIMAL + '[files."config.toml"]\npolicy = "managed"\nrender = "toml"\n'
    manifest += '[files."config.toml".set]\n"db.port" = "{{ ports.db }}"\n'
    folder = write_template(tmp_path, manifest, {"runtime.toml": "x", "config.toml": "[api]\nport = 1\n"})
    with pytest.raises(ManifestError, match=r'files."config.toml".set."db.port": config.toml has no key db.port'):
        read_template(folder)


def test_it_refuses_a_file_shipped_under_a_user_path(tmp_path):
    manifest = MINIMAL + '[files."data/**"]\npolicy = "user"\n'
    folder = write_template(tmp_path, manifest, {"runtime.toml": "x", "data/keep.txt": "y"})
    with pytest.raises(ManifestError, match="user paths are never written"):
        read_template(folder)


def test_it_refuses_an_http_probe_status_the_agent_would_refuse():
    probe = '[[probes]]\nname = "api"\nkind = "http"\nslot = "db"\nexpect_status = 700\n'
    assert "probes[1].expect_status: must be an HTTP status (100-599)" in error_of(MINIMAL + probe)


def test_it_refuses_a_path_the_agent_reserves_for_itself():
    error = error_of(MINIMAL + '[files.".berth-state/x"]\npolicy = "managed"\nrender = "copy"\n')
    assert "names starting with .berth are reserved for the agent" in error
