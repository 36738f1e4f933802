"""Breaker transitions become provider-outage alerts: one when a breaker opens, one when it
closes, none for a failed probe or for state adopted from another replica."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faregate.config import Deployment
from faregate.observability.breaker_alerts import OUTAGE, RECOVERED, BreakerAlerts
from faregate.routing.health import StateChange

DEP = Deployment(id="d1", group="chat", provider="openai", model="gpt-4o-mini", wire="openai")


class Channel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, alert_type: str, payload: Mapping[str, Any]) -> None:
        self.sent.append((alert_type, dict(payload)))


async def test_open_and_close_alert_once_each_and_a_failed_probe_is_quiet() -> None:
    channel, seen = Channel(), []
    alerts = BreakerAlerts(
        {"d1": DEP}, channel, cooldown_seconds=30, on_change=lambda d, s: seen.append((d, s))
    )
    for old, new in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),  # the probe failed: still the same outage
        ("open", "half_open"),
        ("half_open", "closed"),
    ]:
        alerts.changed(StateChange("d1", old, new, 1_700_000_000.0))
    await alerts.aclose()
    assert [t for t, _ in channel.sent] == [OUTAGE, RECOVERED]
    assert channel.sent[0][1] == {
        "deployment": "d1",
        "model": "chat",
        "provider": "openai",
        "provider_model": "gpt-4o-mini",
        "previous_state": "closed",
        "state": "open",
        "cooldown_seconds": 30,
    }
    assert len(seen) == 5  # metrics see every transition


async def test_state_adopted_from_another_replica_is_not_alerted_again() -> None:
    channel = Channel()
    alerts = BreakerAlerts({"d1": DEP}, channel, cooldown_seconds=30)
    alerts.changed(StateChange("d1", "closed", "open", 1.0, local=False))
    alerts.changed(StateChange("d1", "open", "closed", 2.0, local=False))
    await asyncio.sleep(0)
    assert channel.sent == []
