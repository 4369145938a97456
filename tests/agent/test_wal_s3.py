"""WAL in an S3 repository (a real SeaweedFS): agent/wal.py's push stores each file
zstd-compressed (`<name>.zst`), fetch gives it back byte-exact, a segment stored plain before
Berth compressed WAL still restores, and a damaged compressed one fails the fetch clearly,
leaving nothing in its place. Also the one parser of the WAL key layout, which the catalog
and prune read both kinds of key with."""

import json
import secrets
import shutil
import socket
import threading
import time
from types import SimpleNamespace

import msgspec
import pytest
import zstandard

from agent import wal
from agent.api import BackupInfo, CatalogRequest, PruneRequest, Repository
from agent.archiving import ARCHIVE_FILE, backup_dir
from agent.backups import Backups
from agent.commands import Deadline
from agent.docker_backups import STATE, DockerBackups
from agent.repository import RepositoryUnavailable, S3Store, Spec, Stored, WalFile, open_store, wal_key
from agent.s3light import LightS3Store
from agent.walstore import open_wal_store
from tests.stack import wait_for

SYSTEM_ID = "7716154941508943891"
SEGMENT = "000000010000000000000003"


@pytest.fixture
def s3(tmp_path, seaweedfs):
    """A runtime's repository file pointing at a fresh prefix, and that prefix's store."""
    repository = seaweedfs.repository(secrets.token_hex(4))
    spec = Spec(
        url=repository.url,
        endpoint=repository.endpoint,
        access_key_id=repository.access_key_id,
        secret_access_key=repository.secret_access_key,
    )
    spec_file = tmp_path / "backup" / "repository.json"
    spec_file.parent.mkdir()
    spec.save(spec_file, "ref1")
    return spec_file, open_store(spec, "ref1")


@pytest.fixture
def segment(tmp_path):
    """A completed segment: WAL-like content (compressible, not uniform)."""
    path = tmp_path / "pg_wal" / SEGMENT
    path.parent.mkdir()
    path.write_bytes(b"".join(secrets.token_bytes(64) + bytes(960) for _ in range(1024)))
    return path


def push(spec_file, path) -> int:
    return wal.main(["push", str(spec_file), SYSTEM_ID, str(path), path.name])


def fetch(spec_file, name, path) -> int:
    return wal.main(["fetch", str(spec_file), SYSTEM_ID, name, str(path)])


def test_a_pushed_segment_is_stored_compressed_and_fetched_byte_exact(tmp_path, s3, segment):
    spec_file, store = s3
    assert push(spec_file, segment) == 0
    [stored] = store.scan("wal/")
    assert stored.key == wal_key(SYSTEM_ID, SEGMENT) + ".zst"
    assert stored.size < segment.stat().st_size / 4
    assert push(spec_file, segment) == 0, "a retry of a segment stored with the same content succeeds"

    assert fetch(spec_file, SEGMENT, tmp_path / "RECOVERYXLOG") == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment.read_bytes()
    assert fetch(spec_file, "00000002.history", tmp_path / "RECOVERYHISTORY") == 1  # never archived


def test_a_retry_with_other_content_fails_and_keeps_the_stored_segment(s3, segment, capsys):
    spec_file, store = s3
    assert push(spec_file, segment) == 0
    before = store.scan("wal/")
    segment.write_bytes(secrets.token_bytes(segment.stat().st_size))  # another cluster's, say
    assert push(spec_file, segment) == 1
    assert "is already archived with other content" in capsys.readouterr().err
    assert store.scan("wal/") == before


def test_a_segment_stored_plain_before_wal_was_compressed_still_restores(tmp_path, s3, segment):
    spec_file, store = s3
    with open(segment, "rb") as source:
        store.put(wal_key(SYSTEM_ID, SEGMENT), source)
    assert fetch(spec_file, SEGMENT, tmp_path / "RECOVERYXLOG") == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment.read_bytes()


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:100] + bytes([data[100] ^ 0xFF]) + data[101:], lambda data: data[: len(data) // 2]],
    ids=["a corrupt byte", "cut short"],
)
def test_a_damaged_compressed_segment_fails_the_fetch_clearly_and_leaves_no_file(tmp_path, s3, segment, capsys, damage):
    spec_file, store = s3
    assert push(spec_file, segment) == 0
    key = wal_key(SYSTEM_ID, SEGMENT) + ".zst"
    with store.open(key) as source:
        data = source.read()
    store.put(key, _Bytes(damage(data)))
    assert fetch(spec_file, SEGMENT, tmp_path / "RECOVERYXLOG") == 1
    said = capsys.readouterr().err
    assert f"berth-wal fetch {SEGMENT}: {key} in the repository is damaged" in said
    assert list(tmp_path.glob("*RECOVERYXLOG*")) == [], "no segment, and no partial one, for recovery to read"


def test_the_key_parser_reads_plain_and_compressed_wal_files():
    def parse(key: str) -> WalFile | None:
        return WalFile.parse(Stored(key, 1, 0.0))

    compressed, plain, history = (
        parse(f"wal/7/{SEGMENT}.zst"),
        parse(f"wal/7/{SEGMENT}"),
        parse("wal/7/00000002.history"),
    )
    assert (compressed.system_id, compressed.name, compressed.is_segment) == ("7", SEGMENT, True)
    assert (plain.system_id, plain.name, plain.is_segment) == ("7", SEGMENT, True)
    assert (history.name, history.is_segment) == ("00000002.history", False)
    for key in ("wal/7/.zst", "wal/7", f"wal/{SEGMENT}", f"base/7/{SEGMENT}", f"wal/7/x/{SEGMENT}"):
        assert parse(key) is None, key
    assert parse("wal/7/000000010000000000000003.partial.zst").is_segment is False
    assert sorted([compressed, plain], key=lambda file: file.order)[0].name == SEGMENT


def test_the_catalog_and_prune_count_and_remove_plain_and_compressed_segments_alike(tmp_path):
    """A stanza archived plain, then compressed (Berth upgraded in between), two segments
    stored both ways (re-archived after the switch): the catalog counts each segment once and
    its last is the newest of either kind, and prune removes the old ones of both kinds."""
    repository = Repository(url=f"file://{tmp_path}")
    store = open_store(Spec(url=repository.url), "ref1")
    names = [f"00000001000000000000000{n}" for n in range(1, 7)]
    for number, name in enumerate(names):
        suffix = ".zst" if number % 2 else ""  # interleaved: the order must not depend on the kind
        store.put(wal_key(SYSTEM_ID, name) + suffix, _Bytes(b"wal"))
    for twice in (names[1], names[5]):
        store.put(wal_key(SYSTEM_ID, twice), _Bytes(b"wal"))
    store.put(wal_key(SYSTEM_ID, "00000002.history"), _Bytes(b"history"))
    now = time.time()
    for backup_id, start, finished in (("b1", names[0], now - 5), ("b2", names[3], now)):
        info = BackupInfo(backup_id, now - 10, finished, 1, 15, 1, start, start, SYSTEM_ID)
        store.put(f"base/{backup_id}/backup.json", _Bytes(msgspec.json.encode(info)))
    backups = Backups(None)
    deadline = Deadline(60)

    catalog = backups.catalog(CatalogRequest(repository=repository, stanza="ref1"), deadline)
    assert (catalog.wal_segments, catalog.last_wal) == (6, names[-1])

    pruned = backups.prune(
        PruneRequest(repository=repository, stanza="ref1", keep_since_unix=now - 1, min_backups=1), deadline
    )
    assert (pruned.removed_backups, pruned.removed_wal) == (["b1"], 4)
    left = sorted(WalFile.parse(item).name for item in store.scan("wal/"))
    assert left == [*names[3:], names[5], "00000002.history"]


class _Bytes:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset : end], min(end, len(self.data))
        return chunk


def test_the_archive_commands_client_says_why_s3_refused_and_never_the_secret(tmp_path, seaweedfs, segment, capsys):
    repository = seaweedfs.repository(secrets.token_hex(4))
    wrong = secrets.token_urlsafe(24)
    spec = Spec(
        url=repository.url,
        endpoint=repository.endpoint,
        access_key_id=repository.access_key_id,
        secret_access_key=wrong,
    )
    assert isinstance(open_wal_store(spec, "ref1"), LightS3Store)
    spec_file = tmp_path / "repository.json"
    spec.save(spec_file, "ref1")
    assert push(spec_file, segment) == 1
    said = capsys.readouterr().err
    assert f"looking up wal/{SYSTEM_ID}/{SEGMENT}.zst: HTTP 403 Forbidden" in said
    assert wrong not in said and repository.secret_access_key not in said


def test_the_archive_commands_client_fails_clearly_when_s3_is_unreachable(tmp_path, segment, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed: nothing listens there
    spec = Spec(
        url="s3://bucket/p", endpoint=f"http://127.0.0.1:{port}", access_key_id="key", secret_access_key="secret"
    )
    spec_file = tmp_path / "repository.json"
    spec.save(spec_file, "ref1")
    assert push(spec_file, segment) == 1
    said = capsys.readouterr().err
    assert f"berth-wal push {SEGMENT}: s3://bucket/p/ref1: looking up wal/{SYSTEM_ID}/{SEGMENT}.zst: " in said
    assert "ConnectionRefusedError" in said


def test_the_docker_shipper_stores_each_segment_with_the_archive_commands_client(s3, tmp_path, segment, monkeypatch):
    """The docker driver's archive command leaves a segment in its outbox, and the agent's
    shipper stores it as wal.py push does: compressed, through agent.s3light's client, with
    no boto3 client built per segment, and answers in done/."""
    spec_file, store = s3
    state = tmp_path / "runtimes" / "dkship1" / STATE
    shutil.copytree(spec_file.parent, backup_dir(state))
    (backup_dir(state) / ARCHIVE_FILE).write_text(json.dumps({"system_identifier": SYSTEM_ID}))
    wal_folder = state / "wal"
    for folder in ("outbox", "done", "failed"):
        (wal_folder / folder).mkdir(parents=True)
    content = bytearray(segment.read_bytes())
    content[24:32] = int(SYSTEM_ID).to_bytes(8, "little")  # the long header's system identifier
    (wal_folder / "outbox" / SEGMENT).write_bytes(content)
    monkeypatch.setattr(S3Store, "__init__", lambda *args: pytest.fail("a boto3 client was built"))

    stop = threading.Event()
    shipper = threading.Thread(
        target=DockerBackups(SimpleNamespace(root=tmp_path / "runtimes")).ship_until, args=(stop,)
    )
    shipper.start()
    try:
        wait_for(lambda: (wal_folder / "done" / SEGMENT).exists(), timeout=30, what="the shipper's answer")
    finally:
        stop.set()
        shipper.join()
    assert (wal_folder / "done" / SEGMENT).read_text() == ""
    assert not list((wal_folder / "outbox").iterdir()) and not list((wal_folder / "failed").iterdir())
    stored = zstandard.ZstdDecompressor().decompress(store.open(wal_key(SYSTEM_ID, SEGMENT) + ".zst").read())
    assert stored == bytes(content)


def test_a_repository_without_keys_keeps_boto3_for_its_credential_chain():
    assert isinstance(open_wal_store(Spec(url="s3://bucket/p", endpoint="http://127.0.0.1:9"), "ref1"), S3Store)


def test_the_restores_prefetch_takes_each_name_once_and_fails_on_a_damaged_frame(tmp_path, monkeypatch):
    """A segment stored both ways (archived again after WAL was compressed) is downloaded once,
    decompressed; a damaged compressed one fails the prefetch with the reason."""
    monkeypatch.setattr(Backups, "_run_as", lambda self: None)
    store = open_store(Spec(url=f"file://{tmp_path / 'repository'}"), "ref1")
    names = [f"00000001000000000000000{n}" for n in range(1, 4)]
    content = {name: secrets.token_bytes(64) * 1024 for name in names}
    for name in names:
        store.put(wal_key(SYSTEM_ID, name), _Bytes(content[name]))
        store.put(
            wal_key(SYSTEM_ID, name) + ".zst",
            _Bytes(zstandard.ZstdCompressor(write_checksum=True).compress(content[name])),
        )
    backup = BackupInfo("b1", 0.0, 1.0, 1, 15, 1, names[0], names[0], SYSTEM_ID)
    spool = tmp_path / "spool"
    spool.mkdir()

    assert Backups(None)._prefetch_wal(store, backup, None, spool, Deadline(60)) == names[-1]
    assert {path.name: path.read_bytes() for path in spool.iterdir() if path.name in names} == content
    assert sorted(path.name for path in spool.iterdir()) == [*names, "remote.txt"], "no partial file left"

    store.put(wal_key(SYSTEM_ID, names[1]) + ".zst", _Bytes(b"\x28\xb5\x2f\xfd" + bytes(20)))
    with pytest.raises(RepositoryUnavailable, match=f"{names[1]}.zst in the repository is damaged"):
        Backups(None)._prefetch_wal(store, backup, None, tmp_path / "spool", Deadline(60))
