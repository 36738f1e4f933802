"""Periodic background work (hold sweeps, spend checks, …) that stops on a flag, never by
cancellation: a cancel can be lost inside `asyncio.wait_for` on Python 3.11, and a job cut
mid-step could leave shared state half-written. One failing run is logged, not fatal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("faregate.background")


class PeriodicTask:
    """Runs `job()` every `interval_s` seconds (first run after one interval, or at once
    with `run_first=True`) until `stop()`. `stop()` lets a running job finish, then waits
    for the loop to end; it is safe to call twice or before `start()`."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        job: Callable[[], Awaitable[Any]],
        *,
        run_first: bool = False,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.name = name
        self.interval_s = interval_s
        self._job = job
        self._run_first = run_first
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> PeriodicTask:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)
        return self

    async def run_once(self) -> None:
        try:
            await self._job()
        except Exception:  # a failing run must not end the loop
            self.failures += 1
            log.exception("background task %s failed", self.name)
        finally:
            self.runs += 1

    async def _loop(self) -> None:
        if self._run_first:
            await self.run_once()
        while not self._stopping.is_set():
            # The wait ends on the flag or the interval; the task is never cancelled.
            waiter = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({waiter}, timeout=self.interval_s)
            if not done:
                waiter.cancel()  # our own idle waiter, not the job
            if self._stopping.is_set():
                return
            await self.run_once()

    async def stop(self, timeout: float | None = None) -> None:
        """With `timeout`, wait at most that long for a running job (one stuck on a
        database must not hold shutdown); the loop still ends once the job returns."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
