"""Micro-benchmark: CPU per request of the observability hooks (metrics, experiment stats,
in-flight stage, OpenTelemetry span), each run on a settled call the way the pipeline runs
it. Prints microseconds per request; compare with the pass-through's ~300 us per request.

    .venv/bin/python bench/observability.py [--n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

from faregate.auth.principal import Principal
from faregate.config import Deployment, ModelGroup
from faregate.gateway.call import Call
from faregate.observability.metrics import GatewayMetrics
from faregate.observability.observer import ExperimentFeed, InFlightStage, ObservedMeter
from faregate.routing.experiments import ExperimentStats
from faregate.usage import Usage


def settled_call(i: int) -> Call:
    dep = Deployment(
        id="gpt/openai/0", group="gpt", provider="openai", model="gpt-4o-mini", wire="openai"
    )
    group = ModelGroup(name="gpt", deployments=(dep,))
    call = Call(
        request_id=f"req_{i}",
        principal=Principal("k1", "fg_x", team_name="research"),
        kind="chat",
        model="gpt",
        body={},
    )
    call.group, call.deployment, call.attempts = group, dep, 1
    call.usage = Usage(input_tokens=120, output_tokens=20)
    call.cost, call.price = Decimal("0.000030"), Decimal("0.0000375")
    call.finished = call.started + 0.004
    call.experiment, call.arm = "exp", "a"
    return call


def per_call_us(fn: Callable[[Call], object], calls: list[Call]) -> float:
    for call in calls[:1000]:
        fn(call)  # warm the label-children cache
    start = time.process_time()
    for call in calls:
        fn(call)
    return (time.process_time() - start) / len(calls) * 1e6


async def stage_us(calls: list[Call]) -> float:
    stage = InFlightStage()
    start = time.process_time()
    for call in calls:
        await stage.before(call)
        await stage.after(call)
    return (time.process_time() - start) / len(calls) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    calls = [settled_call(i) for i in range(n)]
    metrics = GatewayMetrics()
    rows = {
        "metrics.observe (Prometheus, one call per request)": per_call_us(metrics.observe, calls),
        "experiment stats (A/B requests only)": per_call_us(
            ExperimentFeed(ExperimentStats()), calls
        ),
        "meter wrapper with metrics hook (vs. bare meter)": per_call_us(
            ObservedMeter(
                type("M", (), {"record": lambda self, c: None})(), [metrics.observe]
            ).record,
            calls,
        )
        - per_call_us(lambda c: None, calls),
        "in-flight stage (before + after)": asyncio.run(stage_us(calls)),
    }
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from faregate.observability.tracing import RequestTracer

        provider = TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = RequestTracer(provider)
        few = calls[: min(n, 20_000)]
        rows["OpenTelemetry span (when enabled; SDK, in-memory exporter)"] = per_call_us(
            tracer, few
        )
    except ImportError:
        pass
    start = time.process_time()
    metrics.render()
    rows["one /metrics scrape (ms, not per request)"] = (time.process_time() - start) * 1e3
    for name, value in rows.items():
        print(f"{value:8.2f}  {name}")


if __name__ == "__main__":
    main()
