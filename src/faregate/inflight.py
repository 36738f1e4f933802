"""The requests an event loop is serving, counted, and the lulls between them: the moments
with none in flight.

The HTTP fronts count (`enter` when a request is taken, `leave` when it is answered, both
on the loop's own thread); the batched writers on SQLite read whether a lull came since
their last flush (`InFlight.lulls`) to choose how soon to flush next (store.db.FlushClock).
One count per event loop (`of_loop`), so apps on different loops (tests) do not mix."""

from __future__ import annotations

import asyncio
import weakref


class InFlight:
    __slots__ = ("__weakref__", "lulls", "requests")

    def __init__(self) -> None:
        self.requests = 0  # in flight now
        self.lulls = 0  # times the count fell to zero

    def enter(self) -> None:
        self.requests += 1

    def leave(self) -> None:
        self.requests -= 1
        if not self.requests:
            self.lulls += 1


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InFlight] = (
    weakref.WeakKeyDictionary()
)


def of_loop(loop: asyncio.AbstractEventLoop) -> InFlight:
    """The count of the requests served on `loop`."""
    count = _BY_LOOP.get(loop)
    if count is None:
        count = _BY_LOOP[loop] = InFlight()
    return count
