"""A durable append-only journal of accepted records, one segment file at a time.

A record is in the current segment before the client gets its response, so it survives a
process kill. The writer seals the segment, commits its records to the database, then
deletes it; segments left by a dead process are replayed on start. Replay is safe because
every insert is idempotent (request id, transaction id, ledger key).

A segment is a file of `segment_bytes` allocated up front and mapped into memory: a record
is a copy into the mapping, not a `write` call. Its bytes are in the kernel's page cache as
soon as the copy returns (the same as after `write`: a killed process loses nothing, a lost
machine what was not yet written back). What a `write` cost was not the system call but the
GIL, which every system call lets go of: a batched writer's thread took it each time and the
request waited for its turn to come back, several times per request. The file's blocks are
allocated before it is mapped, so a full disk is an error at a segment's start, never a
fault in a copy.

After its last record a segment holds zeros: a read stops at the last complete line, as at
a torn one. A closed segment is cut to the length of its records; a sealed one is not (it
is deleted once stored, off the event loop: `Sealed`).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson

_SUFFIX = ".jsonl"
SEGMENT_BYTES = 8 << 20  # a few seconds of records at thousands of requests per second


class _Segment(NamedTuple):
    path: Path
    fd: int
    map: mmap.mmap


class Sealed:
    """Segments `Journal.seal` took out of the journal, oldest first: their records are the
    caller's to store. Unmapping and deleting a segment take a millisecond or more (freeing
    its pages and blocks), which every request in flight would wait for on the event loop,
    so they are done here, in a thread: `discard` once the records are in the database,
    `release` (the files stay, to be replayed) when they could not be stored."""

    def __init__(self, segments: list[_Segment]) -> None:
        self._segments = segments
        self.paths = [s.path for s in segments]

    def release(self) -> None:
        segments, self._segments = self._segments, []
        for segment in segments:
            segment.map.close()
            os.close(segment.fd)

    def discard(self) -> None:
        self.release()
        Journal.discard(self.paths)


class Journal:
    def __init__(self, directory: str | Path, *, segment_bytes: int = SEGMENT_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        existing = [int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit()]
        self._seq = max(existing, default=0)
        self._full: list[_Segment] = []  # segments filled since the last seal, oldest first
        self._current = self._open(segment_bytes)

    def _open(self, size: int) -> _Segment:
        self._seq += 1
        path = self.directory / f"{self._seq:012d}{_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            segment = _Segment(path, fd, mmap.mmap(fd, size))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._size = size
        self._pos = 0
        return segment

    def append(self, record: dict[str, Any]) -> None:
        data = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        end = self._pos + len(data)
        if end > self._size:
            self._full.append(self._current)
            self._current = self._open(max(self._segment_bytes, len(data)))
            end = len(data)
        self._current.map[self._pos : end] = data
        self._pos = end

    def seal(self) -> Sealed:
        """Start a new segment; return the sealed ones (the current one and any that filled
        up since the last seal)."""
        sealed = Sealed([*self._full, self._current])
        self._full = []
        self._current = self._open(self._segment_bytes)
        return sealed

    def leftovers(self) -> list[Path]:
        """Sealed segments not yet deleted (left by an earlier process or a failed flush),
        oldest first; not the current one nor those waiting for the next seal."""
        skip = {self._current.path, *(s.path for s in self._full)}
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if p not in skip)

    @staticmethod
    def read(path: Path) -> Iterator[dict[str, Any]]:
        with path.open("rb") as f:
            for line in f:
                # A torn last line was never acknowledged; after the last complete one, a
                # segment a killed process left holds zeros (no line end) up to its end.
                if not line.endswith(b"\n"):
                    return
                yield orjson.loads(line)

    @staticmethod
    def discard(paths: Iterable[Path]) -> None:
        """Delete segments whose records are in the database (blocking: run it in a thread)."""
        for path in paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the segments, the current one cut to its records (deleted if it holds none);
        segments that filled up since the last seal stay, to be replayed."""
        Sealed(self._full).release()
        self._full = []
        segment = self._current
        segment.map.close()
        os.ftruncate(segment.fd, self._pos)
        os.close(segment.fd)
        if self._pos == 0:
            segment.path.unlink(missing_ok=True)
