"""What the gateway observes about each settled call, besides metering: Prometheus metrics,
live A/B experiment statistics and optional traces, run in one place at settle time, plus a
stage that counts requests and holds in flight. A failing observer never fails a request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from faregate.gateway.call import Call
from faregate.routing.experiments import ExperimentStats

log = logging.getLogger("faregate.observability")

Hook = Callable[[Call], None]


class Meter(Protocol):
    def record(self, call: Call) -> None: ...


class ObservedMeter:
    """The pipeline's Meter: the metering recorder first, then every observer hook."""

    def __init__(self, inner: Meter, hooks: Sequence[Hook]) -> None:
        self._inner = inner
        self._hooks = tuple(hooks)

    def record(self, call: Call) -> None:
        self._inner.record(call)
        for hook in self._hooks:
            try:
                hook(call)
            except Exception:
                log.exception("observer failed", extra={"request_id": call.request_id})


class ExperimentFeed:
    """Feeds ExperimentStats with the calls the pipeline tagged with an experiment arm."""

    def __init__(self, stats: ExperimentStats) -> None:
        self.stats = stats

    def __call__(self, call: Call) -> None:
        if call.experiment is None or call.arm is None:
            return
        usage = call.usage
        end = call.finished
        self.stats.record(
            call.experiment,
            call.arm,
            latency=None if end is None else end - call.started,
            error=not call.ok,
            cost=call.cost,
            price=call.price,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
        )


# Where the reserving stages keep their holds in `call.scratch` (BudgetStage, WalletStage).
HOLD_ENTRIES = ("budget_hold", "wallet")


class InFlightStage:
    """Placed after every stage that reserves: counts requests past the policy stages and
    the holds they carry (HOLD_ENTRIES present in scratch) until they settle."""

    name = "in_flight"

    def __init__(self, hold_entries: tuple[str, ...] = HOLD_ENTRIES) -> None:
        self.requests = 0
        self.holds = 0
        self._hold_entries = hold_entries

    async def before(self, call: Call) -> None:
        scratch = call.scratch
        holds = 0
        for name in self._hold_entries:
            if name in scratch:
                holds += 1
        scratch["in_flight_holds"] = holds
        self.requests += 1
        self.holds += holds

    async def after(self, call: Call) -> None:
        self.requests -= 1
        self.holds -= call.scratch.pop("in_flight_holds", 0)
