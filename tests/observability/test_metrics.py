"""GatewayMetrics: settled calls add up to the Prometheus samples a scrape reads."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families

from faregate.auth.principal import Principal
from faregate.config import Deployment
from faregate.gateway.call import Call
from faregate.observability.metrics import GatewayMetrics
from faregate.usage import Usage

DEPLOYMENT = Deployment(id="d1", group="chat", provider="openai", model="gpt-4o-mini")


def _call(status: int = 200, latency: float = 0.1, ttft: float | None = None) -> Call:
    call = Call(
        request_id="req_1",
        principal=Principal(key_id="k1", key_prefix="fg_k1", team_name="research"),
        kind="chat",
        model="chat",
        body={},
    )
    call.deployment = DEPLOYMENT
    call.status = status
    call.attempts = 2 if status >= 500 else 1
    call.started, call.finished, call.ttft = 10.0, 10.0 + latency, ttft
    if status < 400:
        call.usage = Usage(input_tokens=10, output_tokens=4)
        call.cost, call.price = Decimal("0.001"), Decimal("0.00125")
    return call


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_settled_calls_add_up_per_label_set_across_statuses() -> None:
    metrics = GatewayMetrics()
    for call in (_call(), _call(), _call(status=502)):
        metrics.observe(call)
    samples = _samples(metrics)
    team = (("model", "chat"), ("provider", "openai"), ("team", "research"))

    def value(name: str, *extra: tuple[str, str], labels=team) -> float:
        return samples[(name, tuple(sorted((*labels, *extra))))]

    assert value("faregate_requests_total", ("status", "200")) == 2
    assert value("faregate_requests_total", ("status", "502")) == 1
    assert value("faregate_tokens_total", ("type", "input")) == 20
    assert value("faregate_tokens_total", ("type", "output")) == 8
    assert value("faregate_cost_total") == 0.002
    assert value("faregate_price_total") == 0.0025
    route = (("model", "chat"), ("provider", "openai"))
    assert value("faregate_upstream_attempts_total", labels=route) == 4
    assert value("faregate_request_duration_seconds_count", labels=route) == 2  # successes


def test_histogram_buckets_are_cumulative_and_a_value_on_a_bound_counts_in_it() -> None:
    metrics = GatewayMetrics()
    for latency in (0.1, 0.3, 7.0, 1000.0):  # 0.1 is a bucket bound: le="0.1" holds it
        metrics.observe(_call(latency=latency))
    samples = _samples(metrics)
    route = (("model", "chat"), ("provider", "openai"))

    def bucket(le: str) -> float:
        name = "faregate_request_duration_seconds_bucket"
        return samples[(name, tuple(sorted((*route, ("le", le)))))]

    assert bucket("0.05") == 0
    assert bucket("0.1") == 1
    assert bucket("0.5") == 2
    assert bucket("10.0") == 3
    assert bucket("300.0") == 3
    assert bucket("+Inf") == 4
    assert samples[("faregate_request_duration_seconds_sum", route)] == 1007.4
    ttft = samples[("faregate_time_to_first_token_seconds_count", route)]
    assert ttft == 0  # no stream: the series exists, empty
