"""Observability: Prometheus metrics, live experiment statistics, optional OpenTelemetry
traces, the opt-in access log and provider-outage alerts, assembled once from Settings.
Hooks run when a call is settled; nothing here runs per stream chunk or waits on I/O in the
request path."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from faregate.config import ConfigError, Settings
from faregate.observability.access_log import AccessLog
from faregate.observability.breaker_alerts import AlertChannel, BreakerAlerts
from faregate.observability.metrics import GatewayMetrics, breaker_gauges
from faregate.observability.observer import (
    ExperimentFeed,
    Hook,
    InFlightStage,
    Meter,
    ObservedMeter,
)
from faregate.observability.tracing import RequestTracer, otel_available
from faregate.routing.experiments import ExperimentStats
from faregate.routing.health import HealthRegistry
from faregate.routing.router import Router

__all__ = ["BreakerAlerts", "GatewayMetrics", "Observability", "build_observability"]


@dataclass
class Observability:
    experiments: ExperimentStats
    in_flight: InFlightStage
    alerts: BreakerAlerts
    metrics: GatewayMetrics | None = None
    tracer: RequestTracer | None = None
    metrics_public: bool = False
    metrics_token: str | None = None
    hooks: list[Hook] = field(default_factory=list)

    def meter(self, inner: Meter) -> Meter:
        """Wrap the metering recorder so every settled call also reaches the hooks."""
        return ObservedMeter(inner, self.hooks) if self.hooks else inner


def build_observability(
    settings: Settings, health: HealthRegistry, router: Router, alerts: AlertChannel | None = None
) -> Observability:
    metrics_cfg = settings.section("metrics")
    tracing_cfg = settings.section("tracing")
    access_log = settings.section("observability").get("access_log", False)
    if not isinstance(access_log, bool):
        raise ConfigError("observability.access_log must be true or false")
    experiments = ExperimentStats()
    in_flight = InFlightStage()
    metrics = GatewayMetrics() if metrics_cfg.get("enabled", True) else None
    deployments = {d.id: d for g in settings.models.values() for d in g.deployments}
    breaker_alerts = BreakerAlerts(
        deployments,
        alerts,
        cooldown_seconds=health.policy.cooldown_seconds,
        on_change=metrics.breaker_changed if metrics else None,
    )
    health.on_change(breaker_alerts.changed)
    obs = Observability(
        experiments,
        in_flight,
        breaker_alerts,
        metrics=metrics,
        metrics_public=bool(metrics_cfg.get("public", False)),
        metrics_token=metrics_cfg.get("token") or None,
    )
    if router.experiments():
        obs.hooks.append(ExperimentFeed(experiments))
    if metrics is not None:
        obs.hooks.append(metrics.observe)

        def gauges() -> Iterator[Any]:
            yield from breaker_gauges(health.snapshot)
            yield from in_flight_gauges(in_flight)

        metrics.add_gauges(gauges)
    if tracing_cfg.get("enabled", False):
        if not otel_available():
            raise ConfigError("tracing.enabled needs OpenTelemetry: pip install 'faregate[otel]'")
        obs.tracer = RequestTracer()
        obs.hooks.append(obs.tracer)
    if access_log:
        obs.hooks.append(AccessLog())
    return obs


def in_flight_gauges(stage: InFlightStage) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    yield GaugeMetricFamily(
        "faregate_requests_in_flight",
        "Requests past the policy stages, not yet settled",
        value=stage.requests,
    )
    yield GaugeMetricFamily(
        "faregate_holds_in_flight",
        "Budget and wallet holds reserved, not yet settled",
        value=stage.holds,
    )


def upstream_gauges(pools: Callable[[], Iterable[tuple[str, int, int]]]) -> Iterator[Any]:
    """The upstream connection pools, per provider host: open connections and the calls
    waiting for one (a host at its `max_connections`)."""
    from prometheus_client.core import GaugeMetricFamily

    open_ = GaugeMetricFamily(
        "faregate_upstream_connections",
        "Connections open (or opening) to an upstream host",
        labels=["origin"],
    )
    waiting = GaugeMetricFamily(
        "faregate_upstream_connection_waiters",
        "Calls waiting for a connection to an upstream host at its max_connections",
        labels=["origin"],
    )
    for origin, count, waiters in pools():
        open_.add_metric([origin], count)
        waiting.add_metric([origin], waiters)
    yield open_
    yield waiting
