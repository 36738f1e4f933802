"""Budget definitions from the `budgets:` config list, validated once at startup. Pure
values: spending against them lives in budgets.py."""

# Configuration:
#
# budgets:
#   - id: design-monthly
#     scope: team               # customer | team | key | tag | model
#     match: design             # a value, or "*": every team gets its own budget
#     basis: cost               # cost (what providers charge us) | price (what we charge)
#     amount: "500.00"
#     period: month             # day | week | month, aligned to local midnight
#     timezone: Europe/Berlin
#     thresholds: [0.5, 0.8, 1.0]
#     hard: true                # false: track and alert, never refuse

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from faregate.config import ConfigError
from faregate.money import parse_decimal, to_nanos
from faregate.policy.periods import PERIODS, is_timezone
from faregate.policy.subject import Subject

BUDGET_SCOPES = ("customer", "team", "key", "tag", "model")
BASES = ("cost", "price")


@dataclass(frozen=True, slots=True)
class BudgetDef:
    id: str
    scope: str
    match: str
    basis: str
    amount: Decimal
    period: str
    timezone: str = "UTC"
    thresholds: tuple[Decimal, ...] = ()
    hard: bool = True
    limit_nanos: int = field(init=False, repr=False)
    marks: tuple[int, ...] = field(init=False, repr=False)  # each threshold, in nanos

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit_nanos", to_nanos(self.amount))
        object.__setattr__(self, "marks", tuple(to_nanos(self.amount * t) for t in self.thresholds))

    def values(self, subject: Subject, model: str) -> tuple[str, ...]:
        """The subject's values this budget counts against (one per tag for tag budgets)."""
        values = subject.values(self.scope, model)
        return values if self.match == "*" else tuple(v for v in values if v == self.match)


def _decimal(value: Any, what: str) -> Decimal:
    try:
        return parse_decimal(value)
    except (ValueError, InvalidOperation):
        raise ConfigError(f"{what} must be a number") from None


def _choice(
    spec: Mapping[str, Any], name: str, allowed: Sequence[str], default: str | None = None
) -> str:
    value = spec.get(name, default)
    if value not in allowed:
        raise ConfigError(f"budget {spec.get('id')!r}: {name} must be one of {', '.join(allowed)}")
    return str(value)


def _thresholds(spec: Mapping[str, Any]) -> tuple[Decimal, ...]:
    raw = spec.get("thresholds") or []
    if not isinstance(raw, list):
        raise ConfigError(f"budget {spec.get('id')!r}: thresholds must be a list")
    values = sorted({_decimal(t, "threshold") for t in raw})
    if any(t <= 0 for t in values):
        raise ConfigError(f"budget {spec.get('id')!r}: thresholds must be above 0")
    return tuple(values)


def parse_budget(spec: Mapping[str, Any]) -> BudgetDef:
    if not isinstance(spec, Mapping) or not spec.get("id"):
        raise ConfigError("every budget needs an id")
    budget_id = str(spec["id"])
    amount = _decimal(spec.get("amount"), f"budget {budget_id!r} amount")
    if amount <= 0:
        raise ConfigError(f"budget {budget_id!r}: amount must be above 0")
    timezone = str(spec.get("timezone", "UTC"))
    if not is_timezone(timezone):
        raise ConfigError(f"budget {budget_id!r}: unknown time zone {timezone!r}")
    return BudgetDef(
        id=budget_id,
        scope=_choice(spec, "scope", BUDGET_SCOPES),
        match=str(spec.get("match", "*")),
        basis=_choice(spec, "basis", BASES, "cost"),
        amount=amount,
        period=_choice(spec, "period", PERIODS, "month"),
        timezone=timezone,
        thresholds=_thresholds(spec),
        hard=bool(spec.get("hard", True)),
    )


def parse_budgets(section: Sequence[Any] | Mapping[str, Any] | None) -> list[BudgetDef]:
    """The `budgets:` list (a mapping with a `budgets` list is accepted too)."""
    if not section:
        return []
    items = (section.get("budgets") or []) if isinstance(section, Mapping) else section
    defs = [parse_budget(spec) for spec in items]
    ids = [d.id for d in defs]
    if len(set(ids)) != len(ids):
        raise ConfigError("budget ids must be unique")
    return defs
