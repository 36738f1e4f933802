"""The background billing run: every `interval` seconds, close ended periods into invoices
and finalize drafts past their grace period. Stops on a flag, never by cancelling a run."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faregate.billing.invoicing import Invoicing

log = logging.getLogger("faregate.billing")


class BillingRunner:
    def __init__(self, invoicing: Invoicing, interval: float):
        self._invoicing = invoicing
        self._interval = interval
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="billing-run")

    async def _loop(self) -> None:
        while not self._closing:
            try:
                await self._invoicing.run()
            except Exception:  # e.g. the database is briefly away: try again next round
                log.exception("billing run failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)

    async def close(self) -> None:
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        _, pending = await asyncio.wait({self._task}, timeout=30)
        for task in pending:
            task.cancel()
