import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEntry
from templating.models import TemplateVersion
from templating.render import render_project
from tests.factories import make_runtime_project
from tests.stack import RUNTIMES

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(tmp_path):
    for name in ("supabase", "postgres"):
        shutil.copytree(RUNTIMES / name, tmp_path / name)
    return tmp_path


def templates(*args) -> str:
    out = StringIO()
    call_command("templates", *args, stdout=out)
    return out.getvalue()


def test_it_registers_each_template_once_and_again_only_when_its_content_changes(root):
    assert templates("sync", "--dir", str(root)) == "postgres: registered r1\nsupabase: registered r1\n"
    assert templates("sync", "--dir", str(root)) == "postgres: unchanged (r1)\nsupabase: unchanged (r1)\n"

    readme = root / "postgres" / "README.md"
    original = readme.read_text()
    readme.write_text(original + "\nMore notes.\n")
    assert "postgres: registered r2" in templates("sync", "--dir", str(root))
    assert AuditEntry.objects.filter(action="template.register").count() == 3


def test_it_registers_a_template_reverted_to_older_content_as_a_new_latest_revision(root):
    templates("sync", "--dir", str(root))
    readme = root / "postgres" / "README.md"
    original = readme.read_text()
    readme.write_text(original + "\nBroken change.\n")
    templates("sync", "--dir", str(root))
    readme.write_text(original)
    assert "postgres: registered r3" in templates("sync", "--dir", str(root))
    r1, r3 = (TemplateVersion.objects.get(name="postgres", revision=n) for n in (1, 3))
    assert r1.digest == r3.digest and TemplateVersion.objects.latest_of("postgres") == r3


def test_it_keeps_every_version_whole_so_an_old_one_still_renders(root):
    templates("sync", "--dir", str(root))
    (root / "postgres" / "runtime.toml").write_text('driver = "process"\n# changed\n')
    templates("sync", "--dir", str(root))
    r1 = TemplateVersion.objects.get(name="postgres", revision=1)
    old = render_project(make_runtime_project(r1, first_port=20000), r1)
    assert b"port = 20000" in old.files["runtime.toml"] and b"# changed" not in old.files["runtime.toml"]


def test_it_refuses_a_malformed_manifest_naming_file_and_key_and_registers_nothing(root):
    manifest = root / "supabase" / "manifest.toml"
    manifest.write_text(manifest.read_text().replace('kind = "tcp"', 'kind = "udp"'))
    with pytest.raises(CommandError) as raised:
        templates("sync", "--dir", str(root))
    message = str(raised.value)
    assert f"{manifest}: probes[2].kind: must be one of tcp, http, postgres (got 'udp')" in message
    assert "Nothing was registered." in message
    assert not TemplateVersion.objects.exists()


def test_it_lists_versions_with_the_latest_marked(root):
    templates("sync", "--dir", str(root))
    (root / "postgres" / "README.md").write_text("new\n")
    templates("sync", "--dir", str(root))
    lines = templates("list", "postgres").splitlines()
    assert lines[0].split() == ["template", "revision", "digest", "registered", "projects"]
    assert lines[1].split()[:2] == ["postgres", "r1"]
    assert lines[2].split()[:3] == ["postgres", "r2", "(latest)"]


def test_it_diffs_two_revisions_of_a_template(root):
    templates("sync", "--dir", str(root))
    config = root / "supabase" / "supabase" / "config.toml"
    config.write_text(config.read_text().replace("max_rows = 1000", "max_rows = 500"))
    (root / "supabase" / "volumes" / "db" / "realtime.sql").unlink()
    manifest = root / "supabase" / "manifest.toml"
    manifest.write_text(
        manifest.read_text().replace('[files."volumes/db/realtime.sql"]\npolicy = "managed"\nrender = "copy"\n', "")
    )
    templates("sync", "--dir", str(root))

    diff = templates("diff", "supabase", "1", "2")
    assert "--- r1/supabase/config.toml\n+++ r2/supabase/config.toml\n" in diff
    assert "-max_rows = 1000\n+max_rows = 500\n" in diff
    assert "--- r1/volumes/db/realtime.sql\n+++ /dev/null\n" in diff
    assert "--- r1/manifest.toml\n+++ r2/manifest.toml\n" in diff
    assert templates("diff", "supabase", "2", "2") == "supabase r2 and r2 have the same content.\n"
    with pytest.raises(CommandError, match="template supabase has no r9"):
        templates("diff", "supabase", "1", "9")


def test_it_trial_renders_every_template_and_registers_nothing_when_one_fails(root):
    compose = root / "supabase" / "docker-compose.yml"
    compose.write_text(compose.read_text() + "# {{ project.owner }}\n")
    with pytest.raises(CommandError) as raised:
        templates("sync", "--dir", str(root))
    message = str(raised.value)
    assert "supabase r1 docker-compose.yml: 'dict object' has no attribute 'owner'" in message
    assert "Nothing was registered." in message
    assert not TemplateVersion.objects.exists()
    assert not AuditEntry.objects.filter(action="template.register").exists()


def test_it_names_an_undefined_secret_in_a_process_template(root):
    runtime = root / "postgres" / "runtime.toml"
    runtime.write_text(runtime.read_text() + 'token = "{{ secrets.no_such_secret }}"\n')
    with pytest.raises(
        CommandError, match=r"postgres r1 runtime.toml: 'dict object' has no attribute 'no_such_secret'"
    ):
        templates("sync", "--dir", str(root))
    assert not TemplateVersion.objects.exists()
