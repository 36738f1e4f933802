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

A sealed segment is cut to the length of its records. A segment a killed process left is
followed by zeros: a read stops at the last complete line, as at a torn one.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_SUFFIX = ".jsonl"
SEGMENT_BYTES = 8 << 20  # a few seconds of records at thousands of requests per second


class Journal:
    def __init__(self, directory: str | Path, *, segment_bytes: int = SEGMENT_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        existing = [int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit()]
        self._seq = max(existing, default=0) + 1
        self._full: list[Path] = []  # segments filled since the last seal, oldest first
        self._open(self._seq, segment_bytes)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{_SUFFIX}"

    def _open(self, seq: int, size: int) -> None:
        fd = os.open(self._path(seq), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            self._path(seq).unlink(missing_ok=True)
            raise
        self._fd = fd
        self._size = size
        self._pos = 0

    def _cut(self) -> Path:
        """Close the current segment, cut to its records; return its path."""
        self._map.close()
        os.ftruncate(self._fd, self._pos)
        os.close(self._fd)
        return self._path(self._seq)

    def append(self, record: dict[str, Any]) -> None:
        data = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
        end = self._pos + len(data)
        if end > self._size:
            self._full.append(self._cut())
            self._seq += 1
            self._open(self._seq, max(self._segment_bytes, len(data)))
            end = len(data)
        self._map[self._pos : end] = data
        self._pos = end

    def seal(self) -> list[Path]:
        """Close the current segment and start a new one; return the sealed segments (the
        current one and any that filled up since the last seal), oldest first."""
        sealed = [*self._full, self._cut()]
        self._full = []
        self._seq += 1
        self._open(self._seq, self._segment_bytes)
        return sealed

    def leftovers(self) -> list[Path]:
        """Sealed segments not yet deleted (left by an earlier process or a failed flush),
        oldest first; not the current one nor those waiting for the next seal."""
        skip = {self._path(self._seq), *self._full}
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

    def close(self) -> None:
        """Seal the current segment; delete it if it holds nothing."""
        empty = self._pos == 0
        path = self._cut()
        if empty:
            path.unlink(missing_ok=True)
