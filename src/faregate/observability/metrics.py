"""Prometheus metrics for the gateway, on a registry of their own (one per app, no globals).

Kept off the hot path on purpose: a call is counted once, when it is settled (one dict
lookup for cached label children, then a handful of increments); nothing happens per
stream chunk. Breaker states and in-flight gauges are read when Prometheus scrapes.
Money is exact elsewhere; here cost and price are floats, as Prometheus samples are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from faregate.gateway.call import Call

BREAKER_STATES = ("closed", "open", "half_open")
# Upstream latencies run from tens of ms (embeddings) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Children:
    """The label children one (model, provider, team, status) combination updates."""

    __slots__ = (
        "attempts",
        "cache_hits",
        "cache_lookups",
        "cost",
        "input_tokens",
        "latency",
        "output_tokens",
        "price",
        "requests",
        "ttft",
    )

    def __init__(self, m: GatewayMetrics, model: str, provider: str, team: str, status: str):
        by_team = (model, provider, team)
        self.requests = m.requests.labels(model, provider, team, status)
        self.latency = m.latency.labels(model, provider)
        self.ttft = m.ttft.labels(model, provider)
        self.input_tokens = m.tokens.labels(*by_team, "input")
        self.output_tokens = m.tokens.labels(*by_team, "output")
        self.cost = m.cost.labels(*by_team)
        self.price = m.price.labels(*by_team)
        self.attempts = m.attempts.labels(model, provider)
        self.cache_lookups = m.cache_lookups.labels(model)
        self.cache_hits = m.cache_hits.labels(model)


class GatewayMetrics:
    """Every gateway metric; `observe(call)` is the only per-request entry point."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        team = ("model", "provider", "team")
        self.requests = Counter(
            "faregate_requests", "Requests settled", (*team, "status"), registry=r
        )
        self.latency = Histogram(
            "faregate_request_duration_seconds",
            "Time from request to last byte (successful requests)",
            ("model", "provider"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "faregate_time_to_first_token_seconds",
            "Time from request to the first streamed chunk",
            ("model", "provider"),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("faregate_tokens", "Tokens used", (*team, "type"), registry=r)
        self.cost = Counter("faregate_cost", "Provider cost (currency units)", team, registry=r)
        self.price = Counter("faregate_price", "Price charged (currency units)", team, registry=r)
        self.attempts = Counter(
            "faregate_upstream_attempts", "Upstream calls made", ("model", "provider"), registry=r
        )
        self.cache_lookups = Counter(
            "faregate_cache_lookups", "Requests looked up in the cache", ("model",), registry=r
        )
        self.cache_hits = Counter(
            "faregate_cache_hits", "Requests answered from the cache", ("model",), registry=r
        )
        self.breaker_transitions = Counter(
            "faregate_breaker_transitions",
            "Circuit breaker state changes",
            ("deployment", "state"),
            registry=r,
        )
        self.error_responses = Counter(
            "faregate_error_responses",
            "Error responses by status and code, including requests refused before routing",
            ("status", "code"),
            registry=r,
        )
        self.moderation_matches = Counter(
            "faregate_moderation_matches",
            "Requests a moderation policy matched, by policy and action (block or flag)",
            ("policy", "action"),
            registry=r,
        )
        self._children: dict[tuple[str, str, str, int], _Children] = {}

    def observe(self, call: Call) -> None:
        deployment = call.deployment
        provider = deployment.provider if deployment is not None else ""
        model = call.group.name if call.group is not None else call.model
        key = (model, provider, call.principal.team_name or "", call.status)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = _Children(self, key[0], key[1], key[2], str(key[3]))
        c.requests.inc()
        if call.attempts:
            c.attempts.inc(call.attempts)
        if call.status < 400 and call.finished is not None:
            c.latency.observe(call.finished - call.started)
        if call.ttft is not None:
            c.ttft.observe(call.ttft)
        usage = call.usage
        if usage is not None:
            if usage.input_tokens:
                c.input_tokens.inc(usage.input_tokens)
            if usage.output_tokens:
                c.output_tokens.inc(usage.output_tokens)
        if call.cost:
            c.cost.inc(float(call.cost))
        if call.price:
            c.price.inc(float(call.price))
        decision = call.scratch.get("cache")
        if decision is not None and decision.lookup:
            c.cache_lookups.inc()
            if call.cache_hit:
                c.cache_hits.inc()

    def error_response(self, status: int, code: str | None) -> None:
        """Counted by the error middleware for every error answered with a status."""
        self.error_responses.labels(str(status), code or "").inc()

    def moderation_match(self, policy: str, action: str) -> None:
        """Counted by the moderation stage when a policy blocks or flags a request."""
        self.moderation_matches.labels(policy, action).inc()

    def breaker_changed(self, deployment_id: str, state: str) -> None:
        self.breaker_transitions.labels(deployment_id, state).inc()

    def add_gauges(self, read: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        """Register gauges computed at scrape time (breaker states, requests in flight)."""
        self.registry.register(_Gauges(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    def __init__(self, read: Callable[[], Iterator[GaugeMetricFamily]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._read()

    def describe(self) -> list[Any]:
        return []


def breaker_gauges(snapshot: Callable[[], list[dict[str, Any]]]) -> Iterator[GaugeMetricFamily]:
    """`faregate_breaker_state` (1 for the current state of each deployment) and the seconds
    left on each deployment's Retry-After cooldown, from HealthRegistry.snapshot()."""
    state = GaugeMetricFamily(
        "faregate_breaker_state",
        "Circuit breaker state per deployment (1 = current)",
        labels=("deployment", "state"),
    )
    cooling = GaugeMetricFamily(
        "faregate_deployment_unavailable_seconds",
        "Seconds until a deployment takes traffic again (breaker or Retry-After)",
        labels=("deployment",),
    )
    for row in snapshot():
        for name in BREAKER_STATES:
            state.add_metric((row["deployment"], name), 1.0 if row["state"] == name else 0.0)
        cooling.add_metric((row["deployment"],), float(row.get("available_in_seconds") or 0.0))
    yield state
    yield cooling
