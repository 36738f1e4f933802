"""Errors raised by policy: rate limits, budgets and content rules. Each is a FaregateError,
so the one API error handler renders it, with its headers (Retry-After, x-ratelimit-*)."""

from __future__ import annotations

from faregate.errors import InvalidRequest, RateLimited


class RateLimitExceeded(RateLimited):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """A hard budget has no room for this request. OpenAI reports an exhausted spend cap as
    429 `insufficient_quota`; the stable code says which cap it was."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class ContentBlocked(InvalidRequest):
    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"
