"""The S3 repository's streams against a real SeaweedFS (scripts/s3): a multipart upload from a
stream that cannot be re-read, parallel ranged reads, and what happens when either goes wrong
midway (an upload aborted by the server, an object replaced while it is read).

Part and range sizes are made small here (S3's smallest part, 5 MB) so a few megabytes take
several of each; the code paths are the ones a gigabyte takes.
"""

import secrets

import pytest

from agent import repository
from agent.api import Repository
from agent.repository import RangedReader, RepositoryUnavailable, S3Store, Spec, open_store
from tests.stack import wait_for

PART = 5 << 20


class Stream:
    """A source that can only be read forwards, like pg_basebackup's stdout; `after_bytes`
    calls `hook` once that much has been read."""

    def __init__(self, data: bytes, after_bytes: int | None = None, hook=None):
        self.data, self.offset, self.after_bytes, self.hook = data, 0, after_bytes, hook

    def read(self, size: int = -1) -> bytes:
        if self.hook is not None and self.offset >= self.after_bytes:
            self.hook, hook = None, self.hook
            hook()
        end = len(self.data) if size is None or size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset : end], min(end, len(self.data))
        return chunk


def store_of(repository_: Repository) -> S3Store:
    spec = Spec(
        url=repository_.url,
        endpoint=repository_.endpoint,
        access_key_id=repository_.access_key_id,
        secret_access_key=repository_.secret_access_key,
    )
    return open_store(spec, "stanza")


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(repository, "S3_PART_BYTES", PART)
    monkeypatch.setattr(RangedReader, "RANGE_BYTES", 1 << 20)
    monkeypatch.setattr(RangedReader, "RANGE_FETCHERS", 2)


def test_a_multipart_upload_from_a_stream_reads_back_byte_exact_whole_and_in_ranges(seaweedfs, small_parts):
    store = store_of(seaweedfs.repository(secrets.token_hex(4)))
    data = secrets.token_bytes(3 * PART + 12345)  # four parts, the last one short
    assert store.put("base/1/base.tar", Stream(data)) == len(data)
    assert store.head("base/1/base.tar").size == len(data)
    with store.open("base/1/base.tar") as whole:
        assert whole.read() == data
    with store.open_parallel("base/1/base.tar") as ranged:
        ranges = list(ranged.ranges())
    assert b"".join(ranges) == data
    assert len(ranges) == 16  # 1 MB each, the last one short


def test_an_upload_the_server_aborts_midway_fails_clearly_and_leaves_nothing(seaweedfs, small_parts):
    repository_ = seaweedfs.repository(secrets.token_hex(4))
    store = store_of(repository_)
    key = f"{store.prefix}/base/2/base.tar"
    client = seaweedfs.client()

    def uploads() -> list:
        return client.list_multipart_uploads(Bucket=store.bucket, Prefix=key).get("Uploads", [])

    def abort_the_upload() -> None:  # another party (an operator, a lifecycle rule) ends it
        # boto3 starts the multipart upload in a thread of its own while it reads the stream.
        for upload in wait_for(uploads, timeout=30, what="the multipart upload to start"):
            client.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload["UploadId"])

    data = secrets.token_bytes(4 * PART)
    with pytest.raises(RepositoryUnavailable) as failed:
        store.put("base/2/base.tar", Stream(data, after_bytes=2 * PART, hook=abort_the_upload))
    assert "uploading base/2/base.tar" in str(failed.value)
    assert repository_.secret_access_key not in str(failed.value)
    assert store.head("base/2/base.tar") is None
    assert store.scan("base/") == []
    assert uploads() == []


def test_a_source_that_fails_midway_leaves_no_object_and_no_parts(seaweedfs, small_parts):
    store = store_of(seaweedfs.repository(secrets.token_hex(4)))
    key = f"{store.prefix}/base/3/base.tar"

    def broken() -> None:
        raise OSError("the stream broke")

    with pytest.raises(OSError, match="the stream broke"):
        store.put("base/3/base.tar", Stream(secrets.token_bytes(4 * PART), after_bytes=2 * PART, hook=broken))
    assert store.head("base/3/base.tar") is None
    client = seaweedfs.client()
    assert client.list_multipart_uploads(Bucket=store.bucket, Prefix=key).get("Uploads", []) == []


@pytest.mark.parametrize("replacement", [b"shorter", b"x" * (8 << 20)], ids=["shrinks", "same size"])
def test_a_ranged_read_of_an_object_replaced_meanwhile_fails_clearly(seaweedfs, small_parts, replacement):
    store = store_of(seaweedfs.repository(secrets.token_hex(4)))
    store.put("base/4/base.tar", Stream(secrets.token_bytes(8 << 20)))
    with store.open_parallel("base/4/base.tar") as ranged:
        ranges = ranged.ranges()
        next(ranges)
        store.put("base/4/base.tar", Stream(replacement))
        with pytest.raises(RepositoryUnavailable) as failed:
            list(ranges)
    assert "reading base/4/base.tar: base/4/base.tar changed while it was read" in str(failed.value)


def test_a_ranged_read_of_a_missing_object_is_file_not_found(seaweedfs):
    store = store_of(seaweedfs.repository(secrets.token_hex(4)))
    with pytest.raises(FileNotFoundError):
        store.open_parallel("base/5/base.tar")
