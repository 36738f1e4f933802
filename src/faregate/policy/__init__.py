"""Policy before the upstream call: rate limits, spend budgets and content rules. Domain
code only: shared state is reached through faregate.store.counters.base.CounterStore."""

from faregate.policy.budget_defs import BudgetDef, parse_budgets
from faregate.policy.budgets import AlertSink, BudgetHold, Budgets, BudgetStatus
from faregate.policy.errors import BudgetExceeded, ContentBlocked, RateLimitExceeded
from faregate.policy.moderation import (
    ModerationPolicy,
    ModerationProvider,
    Moderator,
    Verdict,
    parse_moderation,
    provider_options,
)
from faregate.policy.ratelimit_rules import Limits, RateLimitConfig, parse_rate_limits
from faregate.policy.ratelimits import Permit, RateLimiter
from faregate.policy.subject import Subject
from faregate.policy.texts import request_texts

__all__ = [
    "AlertSink",
    "BudgetDef",
    "BudgetExceeded",
    "BudgetHold",
    "BudgetStatus",
    "Budgets",
    "ContentBlocked",
    "Limits",
    "ModerationPolicy",
    "ModerationProvider",
    "Moderator",
    "Permit",
    "RateLimitConfig",
    "RateLimitExceeded",
    "RateLimiter",
    "Subject",
    "Verdict",
    "parse_budgets",
    "parse_moderation",
    "parse_rate_limits",
    "provider_options",
    "request_texts",
]
