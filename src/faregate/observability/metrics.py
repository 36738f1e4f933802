"""Prometheus metrics for the gateway, on a registry of their own (one per app, no globals).

Kept off the hot path on purpose: a call is counted once, when it is settled (one dict
lookup, then a handful of additions to plain tallies, exported when scraped); nothing
happens per stream chunk. Breaker states and in-flight gauges are read when Prometheus scrapes.
Money is exact elsewhere; here cost and price are floats, as Prometheus samples are.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from faregate.gateway.call import Call

BREAKER_STATES = ("closed", "open", "half_open")
# Upstream latencies run from tens of ms (embeddings) to minutes (long generations).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Tally:
    """What the settled calls of one (model, provider, team, status) added up to."""

    __slots__ = (
        "attempts",
        "cache_hits",
        "cache_lookups",
        "cost",
        "input_tokens",
        "output_tokens",
        "price",
        "requests",
    )

    def __init__(self) -> None:
        self.requests = self.attempts = self.input_tokens = self.output_tokens = 0
        self.cache_lookups = self.cache_hits = 0
        # Exact sums (Decimal), turned into the exposition's floats only when scraped: a
        # float running total drifts, and float() on every request cost more than an add.
        self.cost = self.price = Decimal(0)


class _Buckets:
    """One histogram series: a count per bucket (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip(
            (*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True
        ):
            running += count
            out.append((bound, running))
        return out


class GatewayMetrics:
    """Every gateway metric; `observe(call)` is the only per-request entry point. It adds
    to plain tallies that a collector turns into Prometheus samples when scraped: a
    prometheus_client child's `inc` takes a lock and checks its type on every call, and a
    settled call made eight of them (11 µs per request)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self._tallies: dict[tuple[str, str, str, int], _Tally] = {}
        self._latency: dict[tuple[str, str], _Buckets] = {}
        self._ttft: dict[tuple[str, str], _Buckets] = {}
        r.register(_Settled(self))
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

    def observe(self, call: Call) -> None:
        deployment = call.deployment
        provider = deployment.provider if deployment is not None else ""
        model = call.group.name if call.group is not None else call.model
        key = (model, provider, call.principal.team_name or "", call.status)
        t = self._tallies.get(key)
        if t is None:
            t = self._tallies[key] = _Tally()
            self._latency.setdefault((model, provider), _Buckets(LATENCY_BUCKETS))
            self._ttft.setdefault((model, provider), _Buckets(TTFT_BUCKETS))
        t.requests += 1
        t.attempts += call.attempts
        if call.status < 400 and call.finished is not None:
            self._latency[model, provider].observe(call.finished - call.started)
        if call.ttft is not None:
            self._ttft[model, provider].observe(call.ttft)
        usage = call.usage
        if usage is not None:
            t.input_tokens += usage.input_tokens
            t.output_tokens += usage.output_tokens
        if call.cost:
            t.cost += call.cost
        if call.price:
            t.price += call.price
        decision = call.scratch.get("cache")
        if decision is not None and decision.lookup:
            t.cache_lookups += 1
            if call.cache_hit:
                t.cache_hits += 1

    def collect_settled(self) -> Iterator[Metric]:
        """The tallies as Prometheus families (the `_Settled` collector's samples)."""
        team = ["model", "provider", "team"]
        requests = CounterMetricFamily(
            "faregate_requests", "Requests settled", labels=[*team, "status"]
        )
        tokens = CounterMetricFamily("faregate_tokens", "Tokens used", labels=[*team, "type"])
        cost = CounterMetricFamily("faregate_cost", "Provider cost (currency units)", labels=team)
        price = CounterMetricFamily("faregate_price", "Price charged (currency units)", labels=team)
        attempts = CounterMetricFamily(
            "faregate_upstream_attempts", "Upstream calls made", labels=["model", "provider"]
        )
        lookups = CounterMetricFamily(
            "faregate_cache_lookups", "Requests looked up in the cache", labels=["model"]
        )
        hits = CounterMetricFamily(
            "faregate_cache_hits", "Requests answered from the cache", labels=["model"]
        )
        by_team: dict[tuple[str, str, str], list[Any]] = {}
        by_model: dict[tuple[str, str], int] = {}
        by_name: dict[str, list[int]] = {}
        for (model, provider, team_name, status), t in list(self._tallies.items()):
            requests.add_metric([model, provider, team_name, str(status)], t.requests)
            sums = by_team.setdefault((model, provider, team_name), [0, 0, Decimal(0), Decimal(0)])
            sums[0] += t.input_tokens
            sums[1] += t.output_tokens
            sums[2] += t.cost
            sums[3] += t.price
            by_model[model, provider] = by_model.get((model, provider), 0) + t.attempts
            cache = by_name.setdefault(model, [0, 0])
            cache[0] += t.cache_lookups
            cache[1] += t.cache_hits
        for labels, (input_tokens, output_tokens, cost_sum, price_sum) in by_team.items():
            tokens.add_metric([*labels, "input"], input_tokens)
            tokens.add_metric([*labels, "output"], output_tokens)
            cost.add_metric(list(labels), float(cost_sum))
            price.add_metric(list(labels), float(price_sum))
        for labels, count in by_model.items():
            attempts.add_metric(list(labels), count)
        for model, (lookup_count, hit_count) in by_name.items():
            lookups.add_metric([model], lookup_count)
            hits.add_metric([model], hit_count)
        yield from (requests, tokens, cost, price, attempts, lookups, hits)
        for name, doc, series in (
            (
                "faregate_request_duration_seconds",
                "Time from request to last byte (successful requests)",
                self._latency,
            ),
            (
                "faregate_time_to_first_token_seconds",
                "Time from request to the first streamed chunk",
                self._ttft,
            ),
        ):
            family = HistogramMetricFamily(name, doc, labels=["model", "provider"])
            for labels, buckets in list(series.items()):
                family.add_metric(list(labels), buckets.cumulative(), buckets.sum)
            yield family

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


class _Settled(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect_settled()

    def describe(self) -> list[Any]:
        return []


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
