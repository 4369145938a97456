"""A base backup's tar, arriving as a stream (an S3 object's, decompressed), extracted by the agent.

`tar -x` behind a pipe took every byte through the pipe twice (the agent's write, tar's read)
and a process switch per pipe-full. Here the bytes the producer (the decompressor) hands over
are written straight into their files: tarfile reads the headers from the stream, a member's
data goes to os.write as views of the producer's chunks, never copied in between.

The producer runs on a thread of its own, so decompressing (zstandard releases the GIL) and
the object's ranged GETs (agent.repository) overlap with the writes (os.write releases it).

Invariants:
- Members are made as agent.tarcopy makes them (tarcopy.place: folders, regular files and
  links only, inside `into`, owned by the server's user); a member refused is refused before
  anything of it is written.
- The stream must end as a tar does: its last member whole, then zero blocks only. A stream
  cut inside a member, or a header tarfile cannot read (it would take it for the archive's
  end), raises CommandFailed.
- At most QUEUED chunks wait between the threads: memory is bounded by the producer's chunk.
- The producer's error (a damaged object, a repository gone, the deadline) is raised in
  preference to the extraction's: what went wrong with the stream explains what the
  extraction saw. Once the extraction failed, the producer's writes raise BrokenPipeError,
  as a pipe's would once `tar -x` stopped.
"""

import os
import queue
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent import tarcopy
from agent.commands import Deadline, RunAs
from agent.errors import CommandFailed

QUEUED = 8
_POLL_S = 0.2
_END = object()


def extract(produce: Callable[[Any], None], into: Path, owner: RunAs | None, deadline: Deadline) -> int:
    """`produce(out)` writes the tar's bytes with out.write(chunk) (on its own thread; each chunk
    is kept, not copied, until written); its members are made under `into` (an existing, empty
    folder). Returns the bytes of the files written."""
    channel = _Channel()
    producing = threading.Thread(target=channel.run, args=(produce,), name="tar-stream", daemon=True)
    producing.start()
    try:
        written = _extract(_Stream(channel.chunks()), into, owner, deadline)
    finally:
        # Stopped first: an extraction that ended early (its deadline, a refused member) no
        # longer empties the queue the producer may be waiting on.
        channel.stop()
        producing.join()
        channel.raise_failure()  # in preference to the extraction's error, if any
    if deadline.expired():
        raise deadline.stopped("extracting the base backup", started=True)
    return written


class Feed:
    """A tar written in chunk by chunk (write, on the caller's thread) and extracted under `into`
    on a thread of its own, so the caller's stream goes on while the files are written: the
    host's copy of a base backup (agent.hostcopy), extracted from the upload it reads.
    write raises BrokenPipeError once the extraction has stopped; finish (after the tar's last
    byte) and abandon end it, finish raising why it failed."""

    def __init__(self, into: Path, owner: RunAs | None, deadline: Deadline):
        self._channel = _Channel()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._extract, args=(into, owner, deadline), name="tar-feed", daemon=True
        )
        self._thread.start()

    def _extract(self, into: Path, owner: RunAs | None, deadline: Deadline) -> None:
        try:
            _extract(_Stream(self._channel.chunks()), into, owner, deadline)
            if deadline.expired():
                raise deadline.stopped("extracting the base backup", started=True)
        except BaseException as error:  # raised by finish
            self._failure = error
        finally:
            self._channel.stop()  # a write waiting for room in the queue is let go

    def write(self, chunk) -> int:
        return self._channel.write(chunk)

    def finish(self) -> None:
        """Once the extraction has read the tar's end; its failure raised."""
        self._channel.end()
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def abandon(self) -> None:
        self._channel.end()  # what is queued is still written: at most QUEUED chunks
        self._thread.join()


class _Channel:
    """The producer's chunks handed to the extracting thread through a bounded queue."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(QUEUED)
        self.stopped = threading.Event()
        self.failure: BaseException | None = None

    def run(self, produce: Callable[[Any], None]) -> None:
        try:
            produce(self)
        except BaseException as error:  # raised on the extracting thread (raise_failure)
            self.failure = error
        finally:
            self.end()

    def end(self) -> None:
        self._put(_END)

    def write(self, chunk) -> int:
        if self.stopped.is_set():
            raise BrokenPipeError("the extraction stopped")
        if chunk:
            self._put(chunk)
        return len(chunk)

    def _put(self, item) -> None:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def chunks(self) -> Iterator:
        while (chunk := self.queue.get()) is not _END:
            yield chunk

    def stop(self) -> None:
        self.stopped.set()

    def raise_failure(self) -> None:
        if self.failure is not None and not isinstance(self.failure, BrokenPipeError):
            raise self.failure


class _Stream:
    """The tar's bytes as tarfile reads a file (read, tell, seek forward: it skips each member's
    padding so), and a member's data handed out as views of the chunks (take)."""

    def __init__(self, chunks: Iterator):
        self.chunks = chunks
        self.view = memoryview(b"")
        self.position = 0
        self.last_read = b""  # what tarfile read last: the block that ended its members

    def take(self, most: int) -> memoryview:
        """Up to `most` bytes from the stream, empty at its end."""
        while not self.view:
            chunk = next(self.chunks, None)
            if chunk is None:
                return self.view
            self.view = memoryview(chunk)
        piece, self.view = self.view[:most], self.view[most:]
        self.position += len(piece)
        return piece

    def read(self, size: int) -> bytes:
        """`size` bytes, fewer at the stream's end (tarfile reads headers so, always sized)."""
        pieces = []
        while size > 0 and (piece := self.take(size)):
            pieces.append(piece)
            size -= len(piece)
        self.last_read = b"".join(pieces)
        return self.last_read

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int) -> int:
        if offset < self.position:
            raise tarfile.ReadError("the stream can only be read forward")
        while self.position < offset and self.take(offset - self.position):
            pass
        return self.position

    def ended_well(self) -> bool:
        return tarcopy.ends_as_tar(self.last_read, lambda: self.take(1 << 20))


def _extract(stream: _Stream, into: Path, owner: RunAs | None, deadline: Deadline) -> int:
    written = 0
    try:
        with tarfile.TarFile(fileobj=stream, mode="r") as archive:
            for member in archive:
                if deadline.expired():
                    return written  # extract() raises why
                made = tarcopy.place(member, into, owner)
                if made is not None:
                    written += _write(stream, member, *made, deadline)
    except tarfile.TarError as error:
        raise CommandFailed(f"the base backup is not a readable tar: {error}") from None
    if not stream.ended_well():
        raise CommandFailed(f"the base backup's tar is cut short or damaged after {stream.position} bytes")
    return written


def _write(stream: _Stream, member: tarfile.TarInfo, path: Path, fd: int, deadline: Deadline) -> int:
    """The member's bytes, from the stream, into `fd` (closed after)."""
    written = handed = 0  # bytes written; of them, handed to the disk (write_soon)
    try:
        while written < member.size and not deadline.expired():
            piece = stream.take(member.size - written)
            if not piece:
                raise CommandFailed(f"the base backup ends inside {member.name}: it is cut short")
            written += len(piece)
            while piece:
                piece = piece[os.write(fd, piece) :]
            if written - handed >= tarcopy.WRITE_SOON or written == member.size:
                tarcopy.write_soon(fd, handed, written - handed)
                handed = written
    except OSError as error:
        raise CommandFailed(f"could not write {path}: {error.strerror}") from None
    finally:
        os.close(fd)
    return written
