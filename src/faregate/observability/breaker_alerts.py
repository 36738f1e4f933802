"""Provider-outage alerts: a deployment's breaker opening (and closing again) goes to the
alert channel (`faregate.alerts.Alerts`: a log line and a signed `alert.triggered`
webhook). Runs off HealthRegistry.on_change; never fails or slows a request.

Alert types: `provider.outage` when a closed breaker opens, `provider.recovered` when it
closes. A half-open probe that fails re-opens the breaker without a new alert. Transitions
adopted from other replicas through Redis are not alerted again (the replica that saw the
failures, or whose probe succeeded, alerts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from faregate.config import Deployment
from faregate.routing.breaker import CLOSED, OPEN
from faregate.routing.health import StateChange

log = logging.getLogger("faregate.alerts")

OUTAGE, RECOVERED = "provider.outage", "provider.recovered"


class AlertChannel(Protocol):
    async def emit(self, alert_type: str, payload: Mapping[str, Any]) -> None: ...


class BreakerAlerts:
    """Call `changed` from HealthRegistry.on_change; `aclose` waits for pending emits."""

    def __init__(
        self,
        deployments: Mapping[str, Deployment],
        channel: AlertChannel | None,
        *,
        cooldown_seconds: float,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._deployments = deployments
        self.channel = channel
        self._cooldown = cooldown_seconds
        self._on_change = on_change  # e.g. metrics.breaker_changed(deployment, state)
        self._pending: set[asyncio.Task[None]] = set()

    def changed(self, change: StateChange) -> None:
        if self._on_change is not None:
            self._on_change(change.deployment_id, change.new)
        if not change.local:
            return
        if change.old == CLOSED and change.new == OPEN:
            alert_type = OUTAGE
        elif change.new == CLOSED:
            alert_type = RECOVERED
        else:
            return
        payload = self.payload(change)
        if self.channel is None:
            log.warning("alert %s", alert_type, extra={"alert": payload})
            return
        self._emit(alert_type, payload)

    def payload(self, change: StateChange) -> dict[str, Any]:
        d = self._deployments.get(change.deployment_id)
        return {
            "deployment": change.deployment_id,
            "model": d.group if d else None,
            "provider": d.provider if d else None,
            "provider_model": d.model if d else None,
            "previous_state": change.old,
            "state": change.new,
            "cooldown_seconds": self._cooldown if change.new == OPEN else None,
        }

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=5)

    def _emit(self, alert_type: str, payload: dict[str, Any]) -> None:
        assert self.channel is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): log only
            log.warning("alert %s", alert_type, extra={"alert": payload})
            return
        task = loop.create_task(self.channel.emit(alert_type, payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
