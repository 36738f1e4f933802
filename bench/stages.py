"""Each pipeline stage's CPU per request three ways: in the flow of a full run, alone with
warm CPU caches, and alone right after the CPU caches were evicted.

Builds the same in-process gateway as `pipeline.py` (configs/faregate-embedded.yaml, every
upstream answering at once) and prints one Markdown table:

- **in flow**: 32 callers run the whole pipeline, as `pipeline.py` does, and each stage's
  `before` and `after` are timed where they run. The time is the event loop thread's CPU
  time, so the writer threads' work is not in it; the embedded stages never wait, so no other
  task runs inside a timed step.
- **alone, warm**: one call goes through the stages the timed one depends on, then the timed
  stage's `before` and `after` run again and again on it (a new request id each time, so
  every hold and lease is a new one). Its code and data stay in the caches.
- **alone, caches evicted**: the same, with an 8 MB copy before every timed step, which
  pushes the stage's code and data out of the core's caches (L1, L2 and most of L3).

Where "in flow" sits between the two tells how much of a stage's cost is reaching memory
rather than running Python (bench/HISTORY.md, "Most of a request's CPU is spent reaching
memory, not running Python").

    python bench/stages.py
    python bench/stages.py --requests 20000 --iterations 5000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import time
from typing import Any

from pipeline import CALLERS, new_call, prepare, start_gateway

from faregate.gateway.stages import resume

EVICT_BYTES = 8 << 20
CLOCK_COST_NS = 0  # measured at start: one thread_time_ns() call


class Tally:
    """Per stage step: CPU spent in the steps that did not wait, how many they were, and how
    many waited."""

    def __init__(self) -> None:
        self.spent: collections.Counter[str] = collections.Counter()
        self.ran: collections.Counter[str] = collections.Counter()
        self.waited: collections.Counter[str] = collections.Counter()
        self.steps: list[str] = []

    def clear(self) -> None:
        for counter in (self.spent, self.ran, self.waited):
            counter.clear()


class Timed:
    """A stage that tallies the CPU time of its inner stage's steps, counting only the steps
    that finish without waiting: while a step waits, other tasks run on the thread, and their
    time would be charged to it. Steps that waited are counted apart."""

    def __init__(self, inner: Any, tally: Tally) -> None:
        self.inner = inner
        self.name = inner.name
        self._tally = tally
        tally.steps += [f"{self.name}.before", f"{self.name}.after"]

    async def before(self, call: Any) -> None:
        await self._step(f"{self.name}.before", self.inner.before(call))

    async def after(self, call: Any) -> None:
        await self._step(f"{self.name}.after", self.inner.after(call))

    async def _step(self, name: str, coro: Any) -> Any:
        started = time.thread_time_ns()
        try:
            pending = coro.send(None)
        except StopIteration as done:
            self._tally.spent[name] += time.thread_time_ns() - started
            self._tally.ran[name] += 1
            return done.value
        self._tally.waited[name] += 1
        return await resume(coro, pending)


def _clock_cost_ns() -> float:
    n = 100_000
    started = time.perf_counter_ns()
    for _ in range(n):
        time.thread_time_ns()
    return (time.perf_counter_ns() - started) / n


async def in_flow(
    gateway: Any, principal: Any, requests: int
) -> tuple[dict[str, float], dict[str, float]]:
    """With 32 callers running the whole pipeline: µs of each stage step that finished
    without waiting, and the share of the steps that waited."""
    tally = Tally()
    plain = list(gateway.stages)
    gateway.stages[:] = [Timed(stage, tally) for stage in plain]

    async def caller(n: int) -> None:
        for _ in range(n):
            await gateway.chat(new_call(principal))

    await asyncio.gather(*(caller(100) for _ in range(CALLERS)))  # warm-up
    tally.clear()
    per_caller = requests // CALLERS
    await asyncio.gather(*(caller(per_caller) for _ in range(CALLERS)))
    gateway.stages[:] = plain
    done = per_caller * CALLERS
    cost = {
        step: tally.spent[step] / tally.ran[step] / 1000 - CLOCK_COST_NS / 1000
        if tally.ran[step]
        else float("nan")
        for step in tally.steps
    }
    return cost, {step: tally.waited[step] / done for step in tally.steps}


async def alone(
    gateway: Any, principal: Any, index: int, iterations: int, evict: bool
) -> tuple[float, float]:
    """µs of stage `index`'s before and after, run again and again on one call."""
    from faregate.api.common import new_request_id

    stages = gateway.stages
    call = new_call(principal)
    for stage in stages[:index]:  # what the timed stage reads (estimate, plan, route)
        await stage.before(call)
    stage = stages[index]
    source, target = bytearray(os.urandom(EVICT_BYTES)), bytearray(EVICT_BYTES)
    spent_before = spent_after = 0
    for i in range(iterations + 200):
        call.request_id = new_request_id()
        if evict:
            target[:] = source
        started = time.thread_time_ns()
        await stage.before(call)
        before = time.thread_time_ns() - started
        if evict:
            target[:] = source
        started = time.thread_time_ns()
        await stage.after(call)
        after = time.thread_time_ns() - started
        if i >= 200:  # the first rounds warm up the stage
            spent_before += before
            spent_after += after
    for earlier in reversed(stages[:index]):
        await earlier.after(call)
    return (
        (spent_before - iterations * CLOCK_COST_NS) / iterations / 1000,
        (spent_after - iterations * CLOCK_COST_NS) / iterations / 1000,
    )


async def run(key: str, requests: int, iterations: int) -> str:
    runner, gateway, principal = await start_gateway(key)
    flow, waits = await in_flow(gateway, principal, requests)
    await asyncio.sleep(0.5)  # the run's writes land before the stages are timed alone
    rows = [
        "| stage step | in flow, µs | waited | alone, warm, µs | alone, caches evicted, µs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    totals = [0.0, 0.0, 0.0]
    for index, stage in enumerate(gateway.stages):
        warm = await alone(gateway, principal, index, iterations, evict=False)
        cold = await alone(gateway, principal, index, iterations, evict=True)
        for side, w, c in (("before", warm[0], cold[0]), ("after", warm[1], cold[1])):
            step = f"{stage.name}.{side}"
            f = flow.get(step, 0.0)
            share = f"{100 * waits.get(step, 0.0):.0f}%"
            rows.append(f"| `{step}` | {f:.1f} | {share} | {w:.1f} | {c:.1f} |")
            totals = [totals[0] + f, totals[1] + w, totals[2] + c]
    rows.append(f"| all stages | {totals[0]:.1f} | | {totals[1]:.1f} | {totals[2]:.1f} |")
    await runner.cleanup()
    return "\n".join(rows)


def main() -> None:
    global CLOCK_COST_NS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="in flow (default 10,000)")
    parser.add_argument(
        "--iterations", type=int, default=2_000, help="per stage alone (default 2,000)"
    )
    args = parser.parse_args()
    _, key = prepare()
    CLOCK_COST_NS = _clock_cost_ns()
    print(asyncio.run(run(key, args.requests, args.iterations)))


if __name__ == "__main__":
    main()
