"""The opt-in access log: one JSON line per settled gateway call (`observability.access_log`),
written by an observer hook at settle time. Never a body, a prompt or a key: only ids,
status, timing, tokens and money."""

from __future__ import annotations

import logging

from faregate.gateway.call import Call

log = logging.getLogger("faregate.access")


class AccessLog:
    def __call__(self, call: Call) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        usage = call.usage
        deployment = call.deployment
        log.info(
            "request",
            extra={
                "request_id": call.request_id,
                "kind": call.kind,
                "model": call.group.name if call.group is not None else call.model,
                "deployment": deployment.id if deployment is not None else None,
                "status": call.status,
                "error_code": call.error_code,
                "stream": call.stream,
                "cache_hit": call.cache_hit,
                "attempts": call.attempts,
                "latency_ms": str(call.latency_ms),
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "cost": format(call.cost, "f"),
                "price": format(call.price, "f"),
                "team": call.principal.team_name,
                "key_id": call.principal.key_id,
            },
        )
