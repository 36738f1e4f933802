"""Rate-limit rules from the `rate_limits:` config section, and which of them apply to one
request. Pure values: no store, no clock."""

# Configuration:
#
# rate_limits:
#   lease_ttl_s: 900            # a concurrency slot of a dead replica frees after this
#   rules:
#     - id: keys-default
#       scope: key              # key | team | customer | tag | user | model | global
#       match: "*"              # a value, a list of values, or "*": each value separately
#       rpm: 600
#       tpm: 1000000            # input + output tokens
#       max_concurrent: 20
#     - id: team-gpt4o
#       scope: team
#       match: design
#       model: gpt-4o           # optional: only these model(s), counted per model ("*": every model)
#       tpm: 200000

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faregate.config import ConfigError
from faregate.policy.subject import SCOPES, Subject

DEFAULT_LEASE_TTL_S = 900.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute request and token limits and a concurrency cap; None means no limit."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ValueError(f"{name} must be a positive integer")

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.max_concurrent is None

    def without(self, other: Limits) -> Limits:
        """These limits minus every dimension `other` sets (an override replaces them)."""
        return Limits(
            rpm=None if other.rpm is not None else self.rpm,
            tpm=None if other.tpm is not None else self.tpm,
            max_concurrent=None if other.max_concurrent is not None else self.max_concurrent,
        )


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    id: str
    scope: str
    limits: Limits
    match: tuple[str, ...] = ("*",)
    models: tuple[str, ...] | None = None  # None: any model, one shared counter

    @property
    def is_default(self) -> bool:
        """A wildcard rule on any model: the one a key's or team's own limits replace."""
        return self.match == ("*",) and self.models is None

    def counters(self, subject: Subject, model: str) -> list[str]:
        """Counter names this rule charges for the request; empty when it does not apply."""
        if self.models is not None and "*" not in self.models and model not in self.models:
            return []
        values = [
            v for v in subject.values(self.scope, model) if "*" in self.match or v in self.match
        ]
        suffix = f":{model}" if self.models is not None else ""
        return [f"rl:{self.id}:{self.scope}:{v}{suffix}" for v in values]


@dataclass(frozen=True, slots=True)
class Applied:
    """One rule as it applies to one request: its counter name and its limits."""

    rule_id: str
    scope: str
    counter: str
    limits: Limits


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    rules: tuple[RateLimitRule, ...] = ()
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S

    def applicable(
        self, subject: Subject, model: str, own: Mapping[str, Limits] | None = None
    ) -> list[Applied]:
        """Every limit on this request. `own` carries limits stored on the key, team or
        customer itself (scope -> Limits); each set dimension replaces that scope's
        wildcard rules, while rules naming a specific value or model still apply."""
        own = {s: lim for s, lim in (own or {}).items() if not lim.empty}
        applied = []
        for rule in self.rules:
            limits = rule.limits
            if rule.is_default and rule.scope in own:
                limits = limits.without(own[rule.scope])
            if not limits.empty:
                applied += [
                    Applied(rule.id, rule.scope, c, limits) for c in rule.counters(subject, model)
                ]
        for scope, limits in own.items():
            applied += [
                Applied("own", scope, f"rl:own:{scope}:{v}", limits)
                for v in subject.values(scope, model)
            ]
        return applied


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(v, str | int) and str(v) for v in items):
        raise ConfigError(f"{what} must be a non-empty string or list of strings")
    return tuple(str(v) for v in items)


def _rule(spec: Mapping[str, Any], index: int) -> RateLimitRule:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"rate_limits.rules[{index}] must be a mapping")
    scope = spec.get("scope")
    if scope not in SCOPES:
        raise ConfigError(f"rate_limits.rules[{index}].scope must be one of {', '.join(SCOPES)}")
    rule_id = str(spec.get("id") or f"rule{index}")
    try:
        limits = Limits(spec.get("rpm"), spec.get("tpm"), spec.get("max_concurrent"))
    except ValueError as exc:
        raise ConfigError(f"rate limit rule {rule_id!r}: {exc}") from None
    if limits.empty:
        raise ConfigError(f"rate limit rule {rule_id!r} sets none of rpm, tpm, max_concurrent")
    model = spec.get("model", spec.get("models"))
    return RateLimitRule(
        id=rule_id,
        scope=str(scope),
        limits=limits,
        match=_strings(spec.get("match", "*"), f"rule {rule_id!r} match"),
        models=None if model is None else _strings(model, f"rule {rule_id!r} model"),
    )


def parse_rate_limits(section: Mapping[str, Any] | Sequence[Any] | None) -> RateLimitConfig:
    """The `rate_limits:` section: a mapping with `rules` (or just the list of rules)."""
    if not section:
        return RateLimitConfig()
    raw_rules = section if isinstance(section, Sequence) else section.get("rules") or []
    rules = tuple(_rule(spec, i) for i, spec in enumerate(raw_rules))
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids) or "own" in ids:
        raise ConfigError("rate limit rule ids must be unique and not 'own'")
    lease = (
        section.get("lease_ttl_s", DEFAULT_LEASE_TTL_S) if isinstance(section, Mapping) else None
    )
    if isinstance(lease, bool) or not isinstance(lease, int | float | None) or (lease or 1) < 0:
        raise ConfigError("rate_limits.lease_ttl_s must be a positive number of seconds")
    return RateLimitConfig(rules, float(lease or DEFAULT_LEASE_TTL_S))
