"""The moments when the front has no request in flight, for the batched writers' SQLite work.

On SQLite the writers run in the serving process, on the core its requests use. At light
load a flush's steps (binding rows, a statement on the connection's thread, the rollups, the
commit: each 0.1-0.6 ms) ran back to back as soon as the writer woke, and a request in
flight meanwhile waited for all of them, ~2.4 ms: at concurrency 1 those requests were the
p99. Paced, a writer takes each step at a moment with no request in flight, so a request
waits for one step at most (bench/HISTORY.md, "Writes between requests").

Under load there are no such moments, and waiting for them would let the backlog grow: once
requests have been in flight without a break for `busy_s`, a step goes at once, as it would
unpaced. So pacing costs nothing at concurrency 32, and a writer never waits longer than
`busy_s` a step.

The count is per event loop (`of_loop`): the front of the loop counts its requests, and the
writers running on the same loop pace themselves by it. A writer's task marks itself paced
(`pace_this_task`); the same statements run on an API request (a top-up's ledger entry,
say) are not paced."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import weakref
from collections import deque

BUSY_S = 0.02
# With no request in flight, how long a step waits for one to come and go first: a request
# arriving just after a step would wait for the next one too, if that followed at once.
IDLE_S = 0.001

_PACED: contextvars.ContextVar[Quiet | None] = contextvars.ContextVar("paced", default=None)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Quiet:
    """The front's requests in flight (`enter`, `leave`), and the writers' turns."""

    __slots__ = ("__weakref__", "_busy_s", "_busy_since", "_waiting", "in_flight")

    def __init__(self, busy_s: float = BUSY_S) -> None:
        self.in_flight = 0
        self._busy_s = busy_s
        self._busy_since = 0.0  # when requests were last in flight after none (monotonic)
        self._waiting: deque[asyncio.Future[None]] = deque()

    def enter(self) -> None:
        if not self.in_flight:
            self._busy_since = time.monotonic()
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight and self._waiting:
            waiting = self._waiting
            while waiting:  # one step a moment: two in one gap would add up
                waiter = waiting.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return

    def pacing(self) -> bool:
        """Whether quiet moments come: no request in flight, or requests in flight without
        a break for less than `busy_s`."""
        return not self.in_flight or time.monotonic() - self._busy_since < self._busy_s

    async def turn(self) -> None:
        """Return at the next moment a request ends with none left in flight; at once once
        requests have been in flight without a break for `busy_s`; after `IDLE_S` if none
        is in flight and none comes meanwhile."""
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            if self.in_flight:
                left = self._busy_s - (time.monotonic() - self._busy_since)
                if left <= 0:
                    return
            elif waited:
                return
            else:
                left = IDLE_S
            waiter = loop.create_future()
            self._waiting.append(waiter)
            timer = loop.call_later(left, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                with contextlib.suppress(ValueError):  # woken by its timer, still queued
                    self._waiting.remove(waiter)
            waited = True


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Quiet] = weakref.WeakKeyDictionary()


def of_loop(loop: asyncio.AbstractEventLoop) -> Quiet:
    """The count of the requests served on `loop`."""
    quiet = _BY_LOOP.get(loop)
    if quiet is None:
        quiet = _BY_LOOP[loop] = Quiet()
    return quiet


def pace_this_task() -> None:
    """Mark the running task (a batched writer's) as paced by its loop's front."""
    _PACED.set(of_loop(asyncio.get_running_loop()))


def paced() -> Quiet | None:
    """The count that paces the running task's writes, if it is a paced writer."""
    return _PACED.get()


async def step(*, yielding: bool = False) -> None:
    """Before a writer's next step: a paced writer's turn while quiet moments come (see
    `Quiet.turn`); else a plain turn of the loop if `yielding`, or nothing."""
    quiet = _PACED.get()
    if quiet is not None and quiet.pacing():
        await quiet.turn()
    elif yielding:
        await asyncio.sleep(0)
