"""The contract of a pipeline stage (limits, budgets, holds, moderation, …) and the runner
that guarantees every stage that started is finished exactly once, whatever happened."""

from __future__ import annotations

import logging
from typing import Protocol

from faregate.gateway.call import Call

log = logging.getLogger("faregate.gateway")


class Stage(Protocol):
    """`before` runs ahead of the upstream call and may refuse it by raising a
    FaregateError; `after` runs once the call is over (success, error, disconnect,
    timeout), in reverse order, only for stages whose `before` completed."""

    name: str

    async def before(self, call: Call) -> None: ...

    async def after(self, call: Call) -> None: ...


class StageRun:
    def __init__(self, stages: list[Stage]):
        self._stages = stages
        self._entered: list[Stage] = []

    async def enter(self, call: Call) -> None:
        for stage in self._stages:
            await stage.before(call)
            self._entered.append(stage)

    async def exit(self, call: Call) -> None:
        while self._entered:
            stage = self._entered.pop()
            try:
                await stage.after(call)
            except Exception:  # one stage failing must not leave the others unsettled
                log.exception(
                    "stage %s failed to settle", stage.name, extra={"request_id": call.request_id}
                )
