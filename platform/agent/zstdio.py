"""zstd streams for base backups in S3 repositories: compressed on their way into the store,
decompressed on their way into `tar -x` (see "Backups" in docs/architecture.md: the object
store's CPU per byte bounded S3 backups and weighed on restores, so fewer bytes go through
it; a folder repository's tar stays plain, as the kernel copies its files).

Invariants:
- Memory is bounded: compressing holds the read asked for (an upload's part) and the
  compressor's output of one CHUNK of input; decompressing writes CHUNK at a time, however
  well the data compressed.
- A stream decompresses whole and intact, or `decompress` raises Damaged: the frame carries a
  checksum of its content (a corrupt byte), and the output must have the tar's recorded size
  (a truncated frame ends without complaint from zstd itself).
"""

from collections.abc import Iterable
from typing import BinaryIO

import zstandard

SUFFIX = ".zst"
CHUNK = 1 << 20
# Measured on a 307 MiB base backup of bench/backups.py's rows (distinct md5s) on a 2-core
# host: level 1 stored it 2.38x smaller at 518 MiB/s, level 3 2.30x at 149 MiB/s (1.9 and
# 6.8 CPU-s per GiB). Two worker threads cost the same CPU and cut its upload into SeaweedFS
# from 1.57-1.75 s to 1.30-1.37 s (the plain tar's: 2.2-2.3 s).
LEVEL = 1
THREADS = 2


class Damaged(Exception):
    """The compressed stream is corrupt or cut short; the message says which."""


class Compressing:
    """`source` read as one zstd frame: read(n) returns n bytes until the end, since each part
    of a multipart upload but the last must be of the part size."""

    def __init__(self, source: BinaryIO):
        self.source = source
        compressor = zstandard.ZstdCompressor(level=LEVEL, threads=THREADS, write_checksum=True)
        self.compressor = compressor.compressobj()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        while not self.ended and (size < 0 or self.pending_bytes < size):
            chunk = self.source.read(CHUNK)
            out = self.compressor.compress(chunk) if chunk else self.compressor.flush()
            self.ended = not chunk
            if out:
                self.pending.append(out)
                self.pending_bytes += len(out)
        rest = b""
        if 0 <= size < self.pending_bytes:
            # Only the last piece crosses `size`: the loop stopped as soon as it was reached.
            last = self.pending.pop()
            cut = len(last) - (self.pending_bytes - size)
            self.pending.append(last[:cut])
            rest = last[cut:]
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = ([rest], len(rest)) if rest else ([], 0)
        return data


def decompress(blocks: Iterable[bytes], out: BinaryIO, expected_bytes: int) -> None:
    """One zstd frame, arriving in `blocks`, written to `out` as it decompresses; it must
    give `expected_bytes` (the tar's size, recorded when it was compressed). When `out`'s
    reader stops (BrokenPipeError: tar failed), the rest is still decompressed and dropped:
    damage shows at the frame's end, while tar stops at the first header it garbles, so a
    damaged stream raises Damaged, and a reader that failed on its own BrokenPipeError."""
    counted = _Counting(out)
    # Nothing is left inside the writer after the last block: zstd reads a frame's closing
    # checksum only once it has written out all of the frame's content.
    writer = zstandard.ZstdDecompressor().stream_writer(counted, write_size=CHUNK, closefd=False)
    try:
        for block in blocks:
            writer.write(block)
    except zstandard.ZstdError as error:
        raise Damaged(f"{error} (after {counted.count} of its {expected_bytes} bytes)") from None
    if counted.count < expected_bytes:
        raise Damaged(f"it ends after {counted.count} of its {expected_bytes} bytes (the object is cut short)")
    if counted.count > expected_bytes:
        raise Damaged(f"it gives {counted.count} bytes, not its {expected_bytes}")
    if counted.broken is not None:
        raise counted.broken


class _Counting:
    """Counts what is written; once `out` broke, drops it (the error kept in `broken`)."""

    def __init__(self, out: BinaryIO):
        self.out, self.count, self.broken = out, 0, None

    def write(self, data) -> int:
        if self.broken is None:
            try:
                self.out.write(data)
            except BrokenPipeError as error:
                self.broken = error
        self.count += len(data)
        return len(data)
