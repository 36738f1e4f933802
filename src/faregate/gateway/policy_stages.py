"""Pipeline stages over the policy package: pricing estimate, content rules, rate limits
and budgets. Each holds what it reserved in `call.scratch` and releases it in `after`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from faregate.gateway.call import Call
from faregate.gateway.pricing import CatalogPricer
from faregate.policy import (
    Budgets,
    Limits,
    Moderator,
    RateLimiter,
    Subject,
    Verdict,
    request_texts,
)

log = logging.getLogger("faregate.moderation")

# Told of every policy match: (policy id, action), e.g. to count it in Prometheus.
MatchListener = Callable[[str, str], None]
FLAG_HEADER = "x-faregate-moderation"


def subject_of(call: Call) -> Subject:
    """Who the call counts against; made once per call and shared by every stage."""
    subject = call.scratch.get("subject")
    if subject is None:
        p = call.principal
        user = call.body.get("user")
        subject = call.scratch["subject"] = Subject(
            key_id=p.key_id,
            team_id=p.team_name,
            customer_id=p.external_customer_id,
            tags=tuple(call.tags),
            user=user if isinstance(user, str) else None,
        )
    return subject  # type: ignore[no-any-return]


class EstimateStage:
    name = "estimate"
    settles = False

    def __init__(self, pricer: CatalogPricer):
        self._pricer = pricer

    async def before(self, call: Call) -> None:
        self._pricer.estimate_call(call)

    async def after(self, call: Call) -> None:
        return None


class ModerationStage:
    """Blocks a request a `block` policy matches; reports one a `flag` policy matches (a
    WARNING log line with the policy id, a response header, the listener) and lets it on.
    Neither the log nor the header carries the request's text or the rule that matched."""

    name = "moderation"
    settles = False

    def __init__(self, moderator: Moderator, on_match: MatchListener | None = None):
        self._moderator = moderator
        self._on_match = on_match

    async def before(self, call: Call) -> None:
        if call.kind == "moderations":
            return  # a moderation request is itself the check
        opted = call.principal.settings.get("moderation")
        also = opted if isinstance(opted, list) else ()
        policies = self._moderator.applicable(subject_of(call), also)
        if not policies:
            return  # nothing applies: no text is gathered
        verdict = await self._moderator.check_policies(
            policies, request_texts(call.kind, call.body)
        )
        if verdict.policy_id is None:
            return
        self._report(call, verdict)
        if verdict.blocked:
            call.saved = call.est_price or call.saved  # what the blocked call would have cost
            verdict.raise_if_blocked()

    def _report(self, call: Call, verdict: Verdict) -> None:
        action = "block" if verdict.blocked else "flag"
        source = "provider" if verdict.matched == "provider" else "rules"
        if self._on_match is not None:
            self._on_match(str(verdict.policy_id), action)
        if verdict.blocked:
            log.info(
                "moderation policy blocked a request",
                extra={"policy": verdict.policy_id, "action": action, "source": source},
            )
            return
        call.response_headers[FLAG_HEADER] = "flagged"
        log.warning(
            "moderation policy flagged a request",
            extra={"policy": verdict.policy_id, "action": action, "source": source},
        )

    async def after(self, call: Call) -> None:
        return None


def _own_limits(call: Call) -> dict[str, Limits] | None:
    limits = call.principal.settings.get("limits")
    if not isinstance(limits, dict):
        return None
    return {
        "key": Limits(
            rpm=limits.get("rpm"),
            tpm=limits.get("tpm"),
            max_concurrent=limits.get("max_concurrent"),
        )
    }


class RateLimitStage:
    name = "rate_limits"

    def __init__(self, limiter: RateLimiter):
        self._limiter = limiter

    async def before(self, call: Call) -> None:
        permit = await self._limiter.check(
            subject_of(call),
            call.group.name if call.group else call.model,
            call.est_input_tokens + call.est_output_tokens,
            own=_own_limits(call),
            lease_id=call.request_id,
        )
        call.scratch["permit"] = permit
        call.response_headers.update(permit.headers())

    async def after(self, call: Call) -> None:
        usage = call.usage
        actual = usage.input_tokens + usage.output_tokens if usage else 0
        await call.scratch["permit"].finish(actual)


class BudgetStage:
    name = "budgets"

    def __init__(self, budgets: Budgets):
        self._budgets = budgets

    async def before(self, call: Call) -> None:
        hold = await self._budgets.reserve(
            subject_of(call),
            call.group.name if call.group else call.model,
            call.est_cost or 0,
            call.est_price or 0,
            call.request_id,
        )  # type: ignore[arg-type]
        call.scratch["budget_hold"] = hold

    async def after(self, call: Call) -> None:
        await call.scratch["budget_hold"].settle(call.cost, call.price)
