"""Splitting a batch of rows into chunks whose sizes come from a small fixed set.

A multi-row statement (SQLAlchemy's insertmanyvalues, used for INSERT ... RETURNING with many
rows) has one SQL text per row count. Drivers cache prepared statements by text (sqlite3
keeps 128 per connection, asyncpg 100), and a statement with hundreds of parameters is large,
so batches of every size from 1 to 500 filled those caches with hundreds of big statements:
the embedded gateway's memory grew for many minutes under steady traffic. With these sizes
a statement has at most len(SIZES) shapes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

SIZES = (256, 64, 16, 4, 1)


def fixed_size_chunks(rows: Sequence[T], sizes: Sequence[int] = SIZES) -> Iterator[Sequence[T]]:
    """Consecutive chunks of `rows`, in order, each as long as one of `sizes` (largest
    first, ending in 1)."""
    start, left = 0, len(rows)
    for size in sizes:
        while left >= size:
            yield rows[start : start + size]
            start += size
            left -= size


def slice_size(count: int, least: int, slices: int = 4) -> int:
    """How many of `count` rows a batched writer handles per call on SQLite's thread:
    `least`, or a `slices`-th of the batch when that is more. Each call waits for a turn of
    the event loop, which under load serves dozens of requests, so a number of calls that
    grew with the batch would let the writer fall behind for good."""
    return max(least, -(-count // slices))
