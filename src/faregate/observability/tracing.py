"""Optional OpenTelemetry traces: one span per request, built when the call is settled with
its real start and end times, so nothing runs on the request path. Off unless configured
(`tracing.enabled: true`) and `opentelemetry-api` is installed (`pip install faregate[otel]`);
spans go to whatever tracer provider the process set up (the SDK, an OTLP exporter, …).
Attributes carry ids, model, deployment, tokens and money; never a body or a key."""

from __future__ import annotations

import time
from typing import Any

from faregate.gateway.call import Call


def otel_available() -> bool:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


class RequestTracer:
    """A settle-time hook: `tracer(call)` records one span for the finished call."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = trace.get_tracer("faregate", tracer_provider=tracer_provider)

    def __call__(self, call: Call) -> None:
        now_perf, now_ns = time.perf_counter(), time.time_ns()
        end = call.finished if call.finished is not None else now_perf
        start_ns = now_ns - int((now_perf - call.started) * 1e9)
        end_ns = now_ns - int((now_perf - end) * 1e9)
        span = self._tracer.start_span(
            f"{call.kind} {call.model}",
            kind=self._trace.SpanKind.SERVER,
            start_time=start_ns,
            attributes=_attributes(call),
        )
        if not call.ok:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, call.error_code))
        span.end(end_time=end_ns)


def _attributes(call: Call) -> dict[str, Any]:
    d = call.deployment
    attrs: dict[str, Any] = {
        "faregate.request_id": call.request_id,
        "faregate.kind": call.kind,
        "gen_ai.request.model": call.model,
        "faregate.model_group": call.group.name if call.group else call.model,
        "faregate.stream": call.stream,
        "faregate.attempts": call.attempts,
        "faregate.cache_hit": call.cache_hit,
        "faregate.cost": str(call.cost),
        "faregate.price": str(call.price),
        "http.response.status_code": call.status,
    }
    if d is not None:
        attrs["faregate.deployment"] = d.id
        attrs["gen_ai.system"] = d.provider
        attrs["gen_ai.response.model"] = d.model
    if call.principal.team_name:
        attrs["faregate.team"] = call.principal.team_name
    if call.principal.key_id:
        attrs["faregate.key_id"] = call.principal.key_id
    if call.usage is not None:
        attrs["gen_ai.usage.input_tokens"] = call.usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = call.usage.output_tokens
    if call.ttft is not None:
        attrs["faregate.ttft_ms"] = round(call.ttft * 1000, 3)
    if call.error_code:
        attrs["error.type"] = call.error_code
    if call.experiment:
        attrs["faregate.experiment"] = call.experiment
        attrs["faregate.arm"] = call.arm or ""
    return attrs
