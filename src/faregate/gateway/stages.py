"""The contract of a pipeline stage (limits, budgets, holds, moderation, …) and the runner
that guarantees every stage that started is finished exactly once, whatever happened."""

from __future__ import annotations

import logging
import types
from collections.abc import Coroutine, Generator
from typing import Any, Protocol, TypeVar

from faregate.gateway.call import Call

log = logging.getLogger("faregate.gateway")
T = TypeVar("T")


class Stage(Protocol):
    """`before` runs ahead of the upstream call and may refuse it by raising a
    FaregateError; `after` runs once the call is over (success, error, disconnect,
    timeout), for stages whose `before` completed. Every `after` is started in reverse
    order, latest stage first, and may not count on another stage's `after` having
    finished: the ones that wait (on Redis) wait together. A stage with nothing to settle
    says so with `settles = False`: its `after` is then never called."""

    name: str

    async def before(self, call: Call) -> None: ...

    async def after(self, call: Call) -> None: ...


class StageRun:
    def __init__(self, stages: list[Stage]):
        self._stages = stages
        self._entered: list[Stage] = []

    async def enter(self, call: Call) -> None:
        entered = self._entered
        for stage in self._stages:
            await stage.before(call)
            if getattr(stage, "settles", True):
                entered.append(stage)

    async def exit(self, call: Call) -> None:
        """Every entered stage's `after`, latest first, each started at once. Those that
        finish without waiting (the in-process stores) are done in that order; those that
        wait on the shared store wait together, so their script calls, issued in the same
        turn of the event loop, reach Redis in one round trip (store/redis_client.py)
        instead of one each. Once all have started, the rest of each is awaited in turn in
        this task: a task per waiting stage cost more CPU than the settle it ran. One stage
        failing never keeps another from settling."""
        waiting: list[tuple[Stage, Coroutine[Any, Any, None], Any]] = []
        while self._entered:
            stage = self._entered.pop()
            coro = stage.after(call)
            try:
                pending = coro.send(None)
            except StopIteration:
                continue
            except Exception:
                _settle_failed(stage, call)
                continue
            waiting.append((stage, coro, pending))
        for i, (stage, coro, pending) in enumerate(waiting):
            try:
                await resume(coro, pending)
            except Exception as exc:
                _settle_failed(stage, call, exc)
            except BaseException:  # cancelled: the stages not yet resumed are closed
                for _, rest, _ in waiting[i + 1 :]:
                    rest.close()
                raise


def _settle_failed(stage: Stage, call: Call, error: BaseException | None = None) -> None:
    log.error(
        "stage %s failed to settle",
        stage.name,
        exc_info=error or True,
        extra={"request_id": call.request_id},
    )


@types.coroutine
def resume(coro: Coroutine[Any, Any, T], pending: Any) -> Generator[Any, Any, T]:
    """Await the rest of `coro`, whose first step (`coro.send(None)`) yielded `pending`:
    what `await coro` would have done from there on, the coroutine's result included."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
