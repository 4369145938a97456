"""Runtime files are written atomically inside their folder and never touch the user's files."""

import hashlib
import os

import httpx
import pytest

from agent.api import FileSpec
from agent.client import AgentError

REF = "files001"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refused(client, files, **kwargs) -> AgentError:
    with pytest.raises(AgentError) as error:
        client.put_files(REF, files, **kwargs)
    assert error.value.status == 422
    return error.value


def test_managed_files_are_written_and_seeds_only_once(agent):
    client, folder = agent.client(), agent.root / REF
    first = [FileSpec("supabase/config.toml", b"v1"), FileSpec("seed.sql", b"seed v1", policy="seed")]
    assert client.put_files(REF, first) == {"supabase/config.toml": sha(b"v1"), "seed.sql": sha(b"seed v1")}

    second = [FileSpec("supabase/config.toml", b"v2"), FileSpec("seed.sql", b"seed v2", policy="seed")]
    assert client.put_files(REF, second) == {"supabase/config.toml": sha(b"v2"), "seed.sql": sha(b"seed v1")}
    assert (folder / "seed.sql").read_bytes() == b"seed v1"
    assert client.digests(REF, ["supabase/config.toml", "absent.txt"]) == {
        "supabase/config.toml": sha(b"v2"),
        "absent.txt": None,
    }
    assert not [name for name in os.listdir(folder) if name.startswith(".berth-staging")]


def test_only_listed_paths_are_removed_and_never_the_users(agent):
    client, folder = agent.client(), agent.root / REF
    client.put_files(REF, [FileSpec("old.conf", b"old"), FileSpec("keep.conf", b"keep")])
    (folder / "functions").mkdir()
    (folder / "functions" / "hello.ts").write_text("user code")

    client.put_files(REF, [], user_paths=["functions/**"], remove=["old.conf"])
    assert sorted(os.listdir(folder)) == ["functions", "keep.conf"]

    refused(client, [], user_paths=["functions/**"], remove=["functions/hello.ts"])
    refused(client, [FileSpec("functions/hello.ts", b"overwritten")], user_paths=["functions/**"])
    assert (folder / "functions" / "hello.ts").read_text() == "user code"


@pytest.mark.parametrize(
    "path",
    ["../escape.txt", "/etc/berth-test", "a/../../escape.txt", "a//b", "./a", "a\\b", "", ".berth-pg/data/x"],
)
def test_paths_that_could_escape_are_refused(agent, path):
    error = refused(agent.client(), [FileSpec(path, b"x")])
    assert error.code == "invalid"
    assert not (agent.root / "escape.txt").exists() and not os.path.exists("/etc/berth-test")


def test_symlinks_are_never_followed(agent, tmp_path):
    client, folder = agent.client(), agent.root / REF
    client.put_files(REF, [FileSpec("runtime.toml", b"")])
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "linkdir").symlink_to(outside)
    (folder / "linkfile").symlink_to(outside / "target")

    refused(client, [FileSpec("linkdir/file", b"x")])
    refused(client, [FileSpec("linkfile", b"x")])
    refused(client, [], remove=["linkfile"])
    with pytest.raises(AgentError):
        client.digests(REF, ["linkdir/file"])
    assert os.listdir(outside) == []


def test_a_file_cannot_also_be_a_folder(agent):
    refused(agent.client(), [FileSpec("conf", b"file"), FileSpec("conf/inner", b"x")])


def test_one_bad_file_means_none_is_written(agent):
    refused(agent.client(), [FileSpec("good.conf", b"fine"), FileSpec("../bad.conf", b"bad")])
    assert not (agent.root / REF / "good.conf").exists()


def test_malformed_bodies_are_invalid(agent):
    headers = {"Authorization": f"Bearer {agent.token}"}
    url = f"{agent.base_url}/v1/runtimes/{REF}/files"
    for body in (b"not json", b"[]", b'{"files": [{"path": "a", "content_b64": "%%%"}]}'):
        reply = httpx.put(url, headers=headers, content=body)
        assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid", body


def mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_secret_bearing_files_are_private_and_the_runtime_folder_closed(docker_agent):
    client, folder = docker_agent.client(), docker_agent.root / REF
    files = [FileSpec(".env", b"POSTGRES_PASSWORD=s3cret\n"), FileSpec("volumes/api/kong.yml", b"services: []\n")]
    client.put_files(REF, files, private_paths=[".env"])
    assert mode(folder) == 0o700
    assert mode(folder / ".env") == 0o600
    # Bind-mounted into containers that run as other users: readable, behind the closed folder.
    assert mode(folder / "volumes/api/kong.yml") == 0o644
    assert mode(folder / "volumes") == mode(folder / "volumes/api") == 0o755


def test_a_push_tightens_a_runtime_written_before_the_rules(docker_agent):
    client, folder = docker_agent.client(), docker_agent.root / REF
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    (folder / ".env").write_text("POSTGRES_PASSWORD=s3cret\n")
    (folder / ".env").chmod(0o644)
    client.put_files(REF, [FileSpec("docker-compose.yml", b"services: {}\n")], private_paths=[".env"])
    assert mode(folder) == 0o700
    assert mode(folder / ".env") == 0o600
    assert (folder / ".env").read_text() == "POSTGRES_PASSWORD=s3cret\n", "only its mode changed"


def test_the_process_driver_user_may_traverse_the_runtime_folder_and_no_one_else(agent):
    import pwd

    client, folder = agent.client(), agent.root / REF
    client.put_files(REF, [FileSpec("runtime.toml", b'password = "x"\n')], private_paths=["runtime.toml"])
    assert mode(folder / "runtime.toml") == 0o600
    if os.geteuid() == 0:  # PostgreSQL runs as `postgres`, which reaches .berth-pg/ through the folder
        assert mode(folder) == 0o710
        assert folder.stat().st_gid == pwd.getpwnam("postgres").pw_gid
    else:
        assert mode(folder) == 0o700


SUFFIX = "backup-20261130T014400Z"


def test_a_backup_keeps_the_host_s_version_beside_the_new_file_in_the_same_request(agent):
    client, folder = agent.client(), agent.root / REF
    client.put_files(REF, [FileSpec("conf/runtime.toml", b"pushed")])
    (folder / "conf" / "runtime.toml").write_bytes(b"edited on the host")

    digests = client.put_files(
        REF,
        [FileSpec("conf/runtime.toml", b"template"), FileSpec("new.txt", b"new")],
        backup=["conf/runtime.toml", "new.txt"],
        backup_suffix=SUFFIX,
    )

    assert digests == {"conf/runtime.toml": sha(b"template"), "new.txt": sha(b"new")}
    assert (folder / "conf" / f"runtime.toml.{SUFFIX}").read_bytes() == b"edited on the host"
    assert not (folder / f"new.txt.{SUFFIX}").exists()  # nothing was there to keep
    assert client.contents(REF, ["conf/runtime.toml", f"conf/runtime.toml.{SUFFIX}", "absent"]) == {
        "conf/runtime.toml": b"template",
        f"conf/runtime.toml.{SUFFIX}": b"edited on the host",
        "absent": None,
    }


def test_a_backup_never_overwrites_an_earlier_one_and_nothing_is_written_then(agent):
    client, folder = agent.client(), agent.root / REF
    client.put_files(REF, [FileSpec("a.toml", b"one")])
    client.put_files(REF, [FileSpec("a.toml", b"two")], backup=["a.toml"], backup_suffix=SUFFIX)
    error = refused(client, [FileSpec("a.toml", b"three")], backup=["a.toml"], backup_suffix=SUFFIX)
    assert "already exists" in str(error)
    assert (folder / "a.toml").read_bytes() == b"two" and (folder / f"a.toml.{SUFFIX}").read_bytes() == b"one"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backup": ["a.toml"]}, "backup needs a backup_suffix"),
        ({"backup": ["other.toml"], "backup_suffix": SUFFIX}, "is not among the files written"),
        ({"backup": ["a.toml"], "backup_suffix": "../x"}, "backup_suffix"),
    ],
)
def test_a_malformed_backup_is_refused(agent, kwargs, message):
    error = refused(agent.client(), [FileSpec("a.toml", b"x")], **kwargs)
    assert message in str(error)
    assert not (agent.root / REF / "a.toml").exists()


def test_contents_refuses_paths_outside_the_folder(agent):
    with pytest.raises(AgentError) as error:
        agent.client().contents(REF, ["../etc/passwd"])
    assert error.value.status == 422
