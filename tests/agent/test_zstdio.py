"""The zstd streams of base backups in S3 (agent.zstdio): a compressing reader whose reads are
full (a multipart upload's parts must be), decompression that writes bounded pieces, and a
damaged stream (a corrupt byte, an object cut short) told apart from a whole one; then the
same through a real SeaweedFS multipart upload and ranged read."""

import io
import secrets

import pytest

from agent import repository, zstdio
from agent.repository import RangedReader
from tests.agent.test_repository import PART, Stream, store_of


class Sink:
    def __init__(self):
        self.data, self.largest = bytearray(), 0

    def write(self, data) -> int:
        self.data += data
        self.largest = max(self.largest, len(data))
        return len(data)


def tar_like(size: int) -> bytes:
    """Hex text (about 2x), random bytes (none) and zeros (very much), like a data folder's mix."""
    third = size // 3
    return secrets.token_hex(third // 2).encode() + secrets.token_bytes(third) + bytes(size - 2 * third)


def compressed(data: bytes) -> bytes:
    return zstdio.Compressing(Stream(data)).read()


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def test_every_read_but_the_last_is_as_long_as_asked_and_the_whole_decompresses_exactly():
    data = tar_like(9 << 20)
    reader = zstdio.Compressing(Stream(data))
    reads = []
    while chunk := reader.read(300_001):
        reads.append(chunk)
    assert len(reads) > 2
    assert {len(chunk) for chunk in reads[:-1]} == {300_001} and 0 < len(reads[-1]) <= 300_001
    whole = b"".join(reads)
    assert len(whole) < 0.6 * len(data)  # hex text halved, random bytes kept, zeros gone: about 0.5

    sink = Sink()
    zstdio.decompress(pieces(whole, 77_777), sink, len(data))
    assert sink.data == data
    assert sink.largest <= zstdio.CHUNK  # 3 MB of zeros come out a chunk at a time


def test_a_corrupt_byte_is_damage_not_data():
    data = tar_like(3 << 20)
    stored = bytearray(compressed(data))
    stored[len(stored) // 2] ^= 0x40
    with pytest.raises(zstdio.Damaged) as damaged:
        zstdio.decompress([bytes(stored)], Sink(), len(data))
    assert "(after " in str(damaged.value) and " of its 3145728 bytes)" in str(damaged.value)


@pytest.mark.parametrize("kept", [0.5, 0.999])
def test_an_object_cut_short_is_damage_even_where_zstd_itself_does_not_complain(kept):
    data = tar_like(3 << 20)
    stored = compressed(data)
    cut = stored[: int(len(stored) * kept)]
    with pytest.raises(zstdio.Damaged) as damaged:
        zstdio.decompress([cut], Sink(), len(data))
    assert "cut short" in str(damaged.value)


def test_more_than_the_recorded_tar_is_damage():
    data = tar_like(1 << 20)
    with pytest.raises(zstdio.Damaged) as damaged:
        zstdio.decompress([compressed(data) + compressed(data)], Sink(), len(data))
    assert f"not its {len(data)}" in str(damaged.value)


class Stops(Sink):
    """A reader that fails after its first megabyte, as tar does on a garbled header."""

    def write(self, data) -> int:
        if len(self.data) >= 1 << 20:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(data)


def test_when_the_reader_stops_the_rest_still_tells_damage_from_its_own_failure():
    data = tar_like(6 << 20)
    stored = compressed(data)
    with pytest.raises(BrokenPipeError):
        zstdio.decompress(pieces(stored, 65536), Stops(), len(data))
    corrupt = bytearray(stored)
    corrupt[-len(stored) // 3] ^= 0x40  # far past what the reader took
    with pytest.raises(zstdio.Damaged):
        zstdio.decompress(pieces(bytes(corrupt), 65536), Stops(), len(data))


def test_not_zstd_at_all_is_damage():
    with pytest.raises(zstdio.Damaged):
        zstdio.decompress([b"ustar" + bytes(1000)], Sink(), 1005)


def test_a_compressed_multipart_upload_reads_back_exact_through_ranged_reads(seaweedfs, monkeypatch):
    monkeypatch.setattr(repository, "S3_PART_BYTES", PART)
    monkeypatch.setattr(RangedReader, "RANGE_BYTES", 1 << 20)
    monkeypatch.setattr(RangedReader, "RANGE_FETCHERS", 2)
    store = store_of(seaweedfs.repository(secrets.token_hex(4)))
    data = tar_like(36 << 20)  # about 18 MB compressed: four parts, the last one short
    stored = store.put("base/1/base.tar.zst", zstdio.Compressing(io.BytesIO(data)))
    assert 3 * PART < stored < 0.6 * len(data)
    assert store.head("base/1/base.tar.zst").size == stored

    sink = Sink()
    with store.open_parallel("base/1/base.tar.zst") as source:
        zstdio.decompress(source.ranges(), sink, len(data))
    assert sink.data == data
