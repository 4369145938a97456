"""A backup repository: an S3-compatible bucket or a plain folder, behind one small interface.

Used by the agent (base backups, restore, catalog, prune) and by `agent.wal`, the archive and
restore command PostgreSQL runs, which may run under another interpreter as the server's user:
so this module needs the standard library, and boto3 and zstandard for S3 alone (imported
there only).

Layout under the repository's URL, per stanza (a project's ref):

    <stanza>/base/<backup id>/base.tar      pg_basebackup's tar of the data folder (in S3:
                                            base.tar.zst, compressed by agent.backups)
    <stanza>/base/<backup id>/backup.json   written last: a backup without it is unfinished
    <stanza>/wal/<system id>/<name>         archived WAL, one object per file (a segment or
                                            N.history, as PostgreSQL names it; in S3:
                                            <name>.zst, compressed by archive_segment, and
                                            <name> stored plain before Berth compressed WAL)

Invariants:
- A key is written whole or not at all: a folder's file goes to a temporary name, is synced and
  renamed; an S3 object appears only when its upload completes (a multipart upload that fails
  is aborted, so its parts are not left behind either).
- A stream read from the repository is the stored object as it was when the read began, or
  an error: a ranged read of an S3 object that is replaced or shrinks meanwhile fails.
- Memory is bounded: an upload holds at most S3_PARTS_IN_MEMORY + 1 parts, a ranged read
  RangedReader.RANGE_FETCHERS ranges plus the one being written out.
- The credentials are never part of an error message or a repr.
"""

import io
import itertools
import json
import os
import re
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

CHUNK = 1 << 20
S3_TIMEOUT_S = 30
S3_PART_BYTES = 64 << 20  # parts of a multipart upload: a 1 GB backup is 16 requests, and S3's
# 10,000 parts allow a 640 GB one
S3_PARTS_IN_MEMORY = 4  # a stream's parts queued or in flight, plus the one being read: 320 MB


class RepositoryUnavailable(Exception):
    """The repository could not be reached or refused; the message is safe to show and log."""


@dataclass(frozen=True)
class Stored:
    key: str  # relative to the stanza's folder or prefix
    size: int
    modified_unix: float


@dataclass(frozen=True)
class Spec:
    """A repository as the control plane described it (agent.api.Repository's fields)."""

    url: str
    endpoint: str | None = None
    region: str | None = None
    access_key_id: str = ""
    secret_access_key: str = ""

    def __repr__(self) -> str:
        return f"Spec(url={self.url!r}, endpoint={self.endpoint!r})"

    def save(self, path: Path, stanza: str, uid: int | None = None, gid: int | None = None) -> None:
        """Written mode 600 from the start (and owned by the server's user): it holds the secret."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(fd, 0o600)
            if uid is not None:
                os.fchown(fd, uid, gid)
            json.dump({**self.__dict__, "stanza": stanza}, handle)

    @classmethod
    def load(cls, path: Path) -> tuple["Spec", str]:
        data = json.loads(path.read_text())
        stanza = data.pop("stanza")
        return cls(**data), stanza


class Store(Protocol):
    def put(self, key: str, source: BinaryIO) -> int:
        """Write `key` from a stream; returns the bytes written."""

    def open(self, key: str) -> BinaryIO:
        """The stored bytes of `key` as a stream (FileNotFoundError: absent)."""

    def scan(self, prefix: str) -> list[Stored]:
        """Every key under `prefix` (a folder path ending in /)."""

    def delete(self, keys: list[str]) -> None: ...

    def head(self, key: str) -> Stored | None: ...


def open_store(spec: Spec, stanza: str) -> Store:
    parts = urlsplit(spec.url)
    if parts.scheme == "file":
        return FolderStore(Path(parts.path) / stanza)
    if parts.scheme == "s3":
        prefix = "/".join(part for part in (parts.path.strip("/"), stanza) if part)
        return S3Store(spec, parts.netloc, prefix)
    raise RepositoryUnavailable(f"unknown repository scheme {parts.scheme!r}: s3:// or file:// only")


# Beside a runtime's repository file: markers of the WAL segments agent/wal.py stored ahead.
PUSHED = "pushed"
COMPRESSED = ".zst"  # the suffix of a WAL file stored zstd-compressed (agent.zstdio.SUFFIX)
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


@dataclass(frozen=True)
class WalFile:
    """A stored WAL file as its key names it: `wal/<system id>/<name>`, or `<name>.zst` when
    it is stored compressed. The one parser of that layout (catalog, prune, restore)."""

    system_id: str
    name: str  # PostgreSQL's: a segment, N.history
    item: Stored

    @classmethod
    def parse(cls, item: Stored) -> "WalFile | None":
        parts = item.key.split("/")
        if len(parts) != 3 or parts[0] != "wal" or not parts[2].removesuffix(COMPRESSED):
            return None
        return cls(parts[1], parts[2].removesuffix(COMPRESSED), item)

    @property
    def compressed(self) -> bool:
        return self.item.key.endswith(COMPRESSED)

    @property
    def is_segment(self) -> bool:
        return bool(_SEGMENT.match(self.name))

    @property
    def order(self) -> tuple[str, str]:
        """Segments in WAL order: by position (log and segment number), then timeline."""
        return self.name[8:], self.name[:8]


def wal_files(items: list[Stored]) -> list[WalFile]:
    """The WAL files among a scan's items."""
    return [found for found in map(WalFile.parse, items) if found is not None]


def wal_key(system_identifier: str, name: str) -> str:
    """Where a WAL file (segment or timeline history) of one cluster is stored. Each cluster's
    WAL has a folder of its own, named by its system identifier: a cluster made anew in the
    same stanza (a major upgrade's, by dump or logical replication) names its segments from
    the start again, and must never be taken for, or mixed with, the one it replaced."""
    return f"wal/{system_identifier}/{name}"


def system_identifier(data: Path) -> str:
    """The cluster's system identifier: pg_control's first field (a uint64, little-endian on
    the hosts PostgreSQL builds here run on)."""
    with open(data / "global" / "pg_control", "rb") as control:
        return str(int.from_bytes(control.read(8), "little"))


def segment_system_identifier(path: Path) -> str | None:
    """The system identifier in a WAL segment's first page (its long header's xlp_sysid, at
    byte 24), or None for a file without one (a timeline's history)."""
    with open(path, "rb") as segment:
        header = segment.read(32)
    if len(header) < 32 or not path.name.isalnum() or len(path.name) != 24:
        return None
    return str(int.from_bytes(header[24:32], "little"))


def compresses_wal(store: "Store") -> bool:
    """Whether WAL goes into `store` zstd-compressed: into S3, yes (the object store's CPU per
    byte stored weighed on the server it shares a host with: a pgbench segment compresses
    about 10x, and SeaweedFS spent 0.15 CPU-s storing it plain, 0.02 compressed); into a
    folder, no (the kernel copies a file at little cost, as for base backups)."""
    return not isinstance(store, FolderStore)


def archive_segment(store: "Store", path: Path, system_id: str, name: str) -> None:
    """Store a WAL file of the cluster `system_id` (wal_key, compressed when compresses_wal),
    idempotently: one already stored with the same content (plain: the same size) is archived
    (a retry after the upload completed but before PostgreSQL heard of it); another is an
    error, so two clusters archiving into one folder are noticed, never mixed. A segment
    stored plain before Berth compressed WAL is not looked for: one archived again is stored
    compressed too, the same bytes under a second key."""
    if not compresses_wal(store):
        key = wal_key(system_id, name)
        size = path.stat().st_size
        stored = store.head(key)
        if stored is not None:
            if stored.size == size:
                return
            raise RepositoryUnavailable(f"{key} is already archived with {stored.size} bytes, not {size}")
        with open(path, "rb") as source:
            store.put(key, source)
        return
    key = wal_key(system_id, name) + COMPRESSED
    if store.head(key) is not None:
        if _stored_content(store, key) == path.read_bytes():
            return
        raise RepositoryUnavailable(f"{key} is already archived with other content")
    store.put(key, io.BytesIO(_compressed(path)))


def _compressed(path: Path) -> bytes:
    """The file as one zstd frame recording its size and a checksum of its content (download
    checks both), read CHUNK at a time: a push stores up to agent.wal.AHEAD segments at once,
    each holding only its compressed bytes."""
    import zstandard  # noqa: PLC0415

    from agent import zstdio  # noqa: PLC0415 - only S3 repositories compress

    compressor = zstandard.ZstdCompressor(level=zstdio.LEVEL, write_checksum=True).compressobj(size=path.stat().st_size)
    with open(path, "rb") as source:
        parts = [compressor.compress(chunk) for chunk in iter(lambda: source.read(CHUNK), b"")]
    parts.append(compressor.flush())
    return b"".join(parts)


def _stored_content(store: "Store", key: str) -> bytes | None:
    """A compressed WAL file's content, or None if it is damaged (the retry's comparison only)."""
    out = io.BytesIO()
    try:
        with store.open(key) as source:
            _decompress(key, source, out)
    except RepositoryUnavailable:
        return None
    return out.getvalue()


class FolderStore:
    def __init__(self, root: Path):
        self.root = root

    def put(self, key: str, source: BinaryIO) -> int:
        path = self._path(key)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with open(partial, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
            sync_folder(path.parent)
        except OSError as exc:
            # A full repository must not stay full of the part written before the failure.
            partial.unlink(missing_ok=True)
            raise RepositoryUnavailable(f"cannot write {path}: {exc.strerror}") from None
        return written

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise RepositoryUnavailable(f"cannot read {self._path(key)}: {exc.strerror}") from None

    def scan(self, prefix: str) -> list[Stored]:
        folder = self._path(prefix)
        found = []
        try:
            for dirpath, _, names in os.walk(folder):
                for name in names:
                    if name.startswith("."):
                        continue  # a partial write
                    path = Path(dirpath) / name
                    stat = path.stat()
                    found.append(Stored(str(path.relative_to(self.root)), stat.st_size, stat.st_mtime))
        except OSError as exc:
            raise RepositoryUnavailable(f"cannot list {folder}: {exc.strerror}") from None
        if not found and not self.root.parent.is_dir():
            raise RepositoryUnavailable(f"the repository folder {self.root.parent} does not exist")
        return found

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)
        for folder in {self._path(key).parent for key in keys}:
            if folder != self.root and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def head(self, key: str) -> Stored | None:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return Stored(key, stat.st_size, stat.st_mtime)

    def _path(self, key: str) -> Path:
        return self.root / key


class S3Store:
    def __init__(self, spec: Spec, bucket: str, prefix: str):
        import boto3  # noqa: PLC0415 - only S3 repositories need it, and it takes 0.3 s to import
        from botocore.config import Config  # noqa: PLC0415

        self.bucket, self.prefix = bucket, prefix
        self.client = boto3.client(
            "s3",
            endpoint_url=spec.endpoint,
            region_name=spec.region or "us-east-1",
            aws_access_key_id=spec.access_key_id or None,
            aws_secret_access_key=spec.secret_access_key or None,
            config=Config(
                connect_timeout=S3_TIMEOUT_S,
                read_timeout=S3_TIMEOUT_S,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415

        # A stream (pg_basebackup's output) cannot be re-read, so boto3 buffers each part; its
        # default keeps 10 queued plus the one being read (704 MB) for no gain in speed over 4
        # (measured with SeaweedFS: the server's CPU bounds an upload, not the parts in flight).
        self.transfer = TransferConfig(
            multipart_threshold=S3_PART_BYTES,
            multipart_chunksize=S3_PART_BYTES,
            max_concurrency=S3_PARTS_IN_MEMORY,
        )
        self.transfer.max_in_memory_upload_chunks = S3_PARTS_IN_MEMORY  # not among boto3's own arguments

    def put(self, key: str, source: BinaryIO) -> int:
        counted = _Counting(source)
        with self._errors(f"uploading {key}"):
            self.client.upload_fileobj(counted, self.bucket, self._key(key), Config=self.transfer)
        return counted.count

    def open(self, key: str) -> BinaryIO:
        with self._errors(f"reading {key}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            except self.client.exceptions.NoSuchKey:
                raise FileNotFoundError(key) from None

    def open_parallel(self, key: str) -> "RangedReader":
        """`key` as one stream read by several ranged GETs at once (a base backup's tar: one
        GET stream is bound by one connection's speed). Every range is asked of the object
        the stream began with (its ETag): one replaced meanwhile fails the read."""
        with self._errors(f"looking up {key}"):
            try:
                item = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise FileNotFoundError(key) from None
                raise
        return RangedReader(self, key, item["ContentLength"], item["ETag"])

    def get_range(self, key: str, first: int, last: int, etag: str) -> bytes:
        with _S3Errors(f"s3://{self.bucket}/{self.prefix}: reading {key}", changed=key):
            body = self.client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={first}-{last}", IfMatch=etag
            )["Body"]
            data = body.read()
        if len(data) != last - first + 1:
            raise RepositoryUnavailable(
                f"s3://{self.bucket}/{self.prefix}: reading {key}: bytes {first}-{last} gave {len(data)} bytes"
            )
        return data

    def scan(self, prefix: str) -> list[Stored]:
        found = []
        with self._errors(f"listing {prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            ):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                    found.append(Stored(key, item["Size"], item["LastModified"].timestamp()))
        return found

    def delete(self, keys: list[str]) -> None:
        with self._errors("deleting"):
            for start in range(0, len(keys), 1000):
                batch = [{"Key": self._key(key)} for key in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def head(self, key: str) -> Stored | None:
        with self._errors(f"looking up {key}"):
            try:
                item = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return Stored(key, item["ContentLength"], item["LastModified"].timestamp())

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, doing: str):
        return _S3Errors(f"s3://{self.bucket}/{self.prefix}: {doing}")


class RangedReader:
    """Reads an S3 object in order, RANGE_BYTES at a time, with up to RANGE_FETCHERS ranges in
    flight (and so at most that many in memory, plus the one the caller holds)."""

    RANGE_BYTES = 16 << 20
    RANGE_FETCHERS = 4

    def __init__(self, store: S3Store, key: str, size: int, etag: str):
        self.pool = ThreadPoolExecutor(self.RANGE_FETCHERS)
        starts = iter(range(0, size, self.RANGE_BYTES))
        self._next = lambda: next(starts, None)
        self.store, self.key, self.size, self.etag = store, key, size, etag
        self.pending = deque()
        for _ in range(self.RANGE_FETCHERS):
            self._submit()

    def _submit(self) -> None:
        first = self._next()
        if first is not None:
            last = min(self.size, first + self.RANGE_BYTES) - 1
            self.pending.append(self.pool.submit(self.store.get_range, self.key, first, last, self.etag))

    def ranges(self):
        """The object's bytes in order, a whole range at a time (no copy into smaller pieces)."""
        while self.pending:
            data = self.pending.popleft().result()
            self._submit()
            yield data

    def __enter__(self) -> "RangedReader":
        return self

    def __exit__(self, *exc) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)


class _S3Errors:
    """botocore's errors as RepositoryUnavailable, in its own words (they never carry the secret)."""

    def __init__(self, where: str, changed: str | None = None):
        self.where, self.changed = where, changed

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, FileNotFoundError | RepositoryUnavailable):
            return False
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        if isinstance(exc, ClientError) and self.changed is not None:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "InvalidRange", "416"):
                changed = f"{self.changed} changed while it was read ({code})"
                raise RepositoryUnavailable(f"{self.where}: {changed}") from None
        if isinstance(exc, BotoCoreError | ClientError):
            raise RepositoryUnavailable(f"{self.where}: {exc}") from None
        return False


class _Counting:
    def __init__(self, source: BinaryIO):
        self.source, self.count = source, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.count += len(chunk)
        return chunk


def sync_folder(folder: Path) -> None:
    """A folder's entries (a file renamed into it) made durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def download(store: Store, key: str, path: Path) -> None:
    """`key` into `path` whole: a temporary name, renamed when complete. A key ending in
    COMPRESSED is written decompressed, and only once it decompressed whole and intact
    (RepositoryUnavailable: it is damaged)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with store.open(key) as source, open(partial, "wb") as out:
            if key.endswith(COMPRESSED):
                _decompress(key, source, out)
            else:
                shutil.copyfileobj(source, out, CHUNK)
    except RepositoryUnavailable:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def wal_keys(system_identifier: str, name: str) -> tuple[str, str]:
    """Where a WAL file may be stored, in the order to look: compressed (archive_segment's,
    into S3), then plain (a folder's, and S3's before Berth compressed WAL)."""
    key = wal_key(system_identifier, name)
    return key + COMPRESSED, key


def _decompress(key: str, source: BinaryIO, out: BinaryIO) -> None:
    """One zstd frame from `source` into `out`; it must give the size its header records."""
    import zstandard  # noqa: PLC0415

    from agent import zstdio  # noqa: PLC0415 - only compressed WAL needs it

    first = source.read(CHUNK)
    try:
        size = zstandard.frame_content_size(first)
    except zstandard.ZstdError as error:
        raise RepositoryUnavailable(f"{key} in the repository is damaged: {error}") from None
    if size < 0:
        raise RepositoryUnavailable(f"{key} in the repository is damaged: its frame records no size")
    try:
        zstdio.decompress(itertools.chain([first], iter(lambda: source.read(CHUNK), b"")), out, size)
    except zstdio.Damaged as error:
        raise RepositoryUnavailable(f"{key} in the repository is damaged: {error}") from None
