"""A durable append-only journal of accepted usage, one segment file at a time.

A record is written to the current segment (one `write` syscall, so it survives a process
kill) before the client gets its response. The writer seals the segment, commits its
records to the database, then deletes it; segments left by a dead process are replayed on
start. Replay is safe because every insert is idempotent (request id, transaction id).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_SUFFIX = ".jsonl"


class Journal:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit()]
        self._seq = max(existing, default=0) + 1
        self._fd = self._open(self._seq)

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{_SUFFIX}"

    def _open(self, seq: int) -> int:
        return os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def append(self, record: dict[str, Any]) -> None:
        os.write(self._fd, orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE))

    def seal(self) -> Path:
        """Close the current segment and start a new one; return the sealed segment."""
        sealed = self._path(self._seq)
        os.close(self._fd)
        self._seq += 1
        self._fd = self._open(self._seq)
        return sealed

    def leftovers(self) -> list[Path]:
        """Segments other than the current one, oldest first (left by an earlier process)."""
        current = self._path(self._seq)
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if p != current)

    @staticmethod
    def read(path: Path) -> Iterator[dict[str, Any]]:
        with path.open("rb") as f:
            for line in f:
                if line.endswith(b"\n"):  # a torn last line was never acknowledged
                    yield orjson.loads(line)

    def close(self) -> None:
        os.close(self._fd)
        path = self._path(self._seq)
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
