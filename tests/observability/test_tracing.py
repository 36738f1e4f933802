"""One OpenTelemetry span per settled request, with its real start and end, and nothing
secret in its attributes; off unless configured."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from faregate.auth.principal import Principal
from faregate.config import Deployment, ModelGroup
from faregate.gateway.call import Call
from faregate.observability.tracing import RequestTracer
from faregate.usage import Usage


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> RequestTracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return RequestTracer(provider)


def _call(status: int = 200) -> Call:
    dep = Deployment(
        id="gpt/openai/0", group="gpt", provider="openai", model="gpt-4o-mini", wire="openai"
    )
    call = Call(
        request_id="req_abc",
        principal=Principal("key_1", "fg_live_x", team_name="research"),
        kind="chat",
        model="gpt",
        body={"messages": [{"role": "user", "content": "a secret prompt"}]},
    )
    call.group = ModelGroup(name="gpt", deployments=(dep,))
    call.deployment, call.attempts = dep, 2
    call.usage = Usage(input_tokens=12, output_tokens=3)
    call.cost, call.price = Decimal("0.000030"), Decimal("0.0000375")
    call.started = time.perf_counter() - 0.25
    call.finished = call.started + 0.2
    if status >= 400:
        call.fail(status, "upstream_error")
    return call


def test_a_settled_call_becomes_one_server_span_with_its_own_timing(
    tracer: RequestTracer, exporter: InMemorySpanExporter
) -> None:
    tracer(_call())
    [span] = exporter.get_finished_spans()
    assert span.name == "chat gpt" and span.kind is SpanKind.SERVER
    assert span.end_time - span.start_time == pytest.approx(0.2e9, rel=0.01)
    attrs = dict(span.attributes or {})
    assert attrs["faregate.request_id"] == "req_abc"
    assert attrs["faregate.deployment"] == "gpt/openai/0"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["faregate.attempts"] == 2
    assert attrs["faregate.price"] == "0.0000375"
    assert attrs["faregate.team"] == "research"
    assert "secret prompt" not in str(attrs) and "fg_live_x" not in str(attrs)
    assert span.status.status_code is StatusCode.UNSET


def test_a_failed_call_is_an_error_span(
    tracer: RequestTracer, exporter: InMemorySpanExporter
) -> None:
    tracer(_call(502))
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "upstream_error"  # type: ignore[index]
