"""The moments when the front serves no request, for the batched writers' database work.

The writers flush every 0.2 s. At light load, with one or a few requests at a time, a whole
flush in one go (hundreds of rows, a few tens of milliseconds of CPU on the core that also
serves the requests) made the requests that came meanwhile wait for it: at concurrency 1,
one request in forty took several milliseconds. Paced, a writer does its work in small
steps, each taken at a moment when no request is in flight, so a request waits for at most
one step (bench/README.md, "Writes in the quiet moments").

Under load there are no such moments, and waiting for them would let the backlog grow: once
requests have been in flight without a break for `busy_s`, a writer's turn comes at once and
it works in large slices, as it would unpaced."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")

# Rows per paced step: binding 32 request rows and inserting them each take ~0.1-0.2 ms.
PACED_ROWS = 32
# Batches larger than this are written in large slices whatever the load: they are event
# ingestion's, whose throughput the small steps would cut.
PACED_BATCH = 4096


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Quiet:
    """Counts the front's requests in flight (`enter`, `leave`) and gives the writers their
    turns."""

    def __init__(self, busy_s: float = 0.05) -> None:
        self.in_flight = 0
        self._busy_s = busy_s
        self._busy_since = 0.0  # when requests were last in flight after none (monotonic)
        self._served = False
        self._waiting: deque[asyncio.Future[None]] = deque()

    def enter(self) -> None:
        if not self.in_flight:
            self._busy_since = time.monotonic()
            self._served = True
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            waiting = self._waiting
            while waiting:  # one writer a moment: two steps in one gap would add up
                waiter = waiting.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return

    def paces(self, rows: int) -> bool:
        """Whether a batch of `rows` is written in paced steps: the front has served
        requests and had a moment with none in flight within `busy_s`, and the batch is
        not one of ingestion's."""
        return (
            self._served
            and rows <= PACED_BATCH
            and (not self.in_flight or time.monotonic() - self._busy_since < self._busy_s)
        )

    async def turn(self) -> None:
        """Return at a moment with no request in flight, or once requests have been in
        flight without a break for `busy_s`."""
        while self.in_flight:
            left = self._busy_s - (time.monotonic() - self._busy_since)
            if left <= 0:
                return
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiting.append(waiter)
            timer = loop.call_later(left, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()


async def slices(rows: list[T], size: int, pace: Quiet | None) -> AsyncIterator[list[T]]:
    """`rows` in slices of `size`; with `pace` (a Quiet that paces this batch), in slices of
    PACED_ROWS, each after a turn."""
    step = size if pace is None else PACED_ROWS
    for start in range(0, len(rows), max(step, 1)):
        if pace is not None:
            await pace.turn()
        yield rows[start : start + step]
