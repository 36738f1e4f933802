"""`tiered` strategy: the first rule whose `match` fits the request sends it to another
model group, which is then ordered by that group's own strategy (drafts to a cheap model,
final renders to a premium one). Rules only choose a group; they never call anything.

Options:
    rules:
      - match: {tags: [draft]}                 # any listed tag present
        group: cheap-images
      - match: {metadata: {stage: final}}      # every key equal (a list value: any of)
        group: premium-images
      - match: {team: [design], kind: images}  # team / user / key / kind / priority: any of
        group: design-images
    default: standard-images                   # optional; else this group's deployments
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faregate.config import ConfigError, Deployment
from faregate.routing.base import RouteRequest, StrategyContext
from faregate.routing.priority import Priority

_SCALAR_FIELDS = {
    "team": "team",
    "user": "user",
    "key": "key_id",
    "kind": "kind",
    "priority": "priority",
}


@dataclass(frozen=True, slots=True)
class Rule:
    group: str
    tags: frozenset[str] | None = None
    metadata: tuple[tuple[str, frozenset[str]], ...] = ()
    fields: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, request: RouteRequest) -> bool:
        if self.tags is not None and not (self.tags & request.tags):
            return False
        for key, allowed in self.metadata:
            value = request.metadata.get(key)
            if value is None or str(value) not in allowed:
                return False
        for attr, allowed in self.fields:
            value = getattr(request, attr)
            if value is None or str(value) not in allowed:
                return False
        return True


def _any_of(value: Any) -> frozenset[str]:
    items = value if isinstance(value, list | tuple | set | frozenset) else [value]
    return frozenset(str(v) for v in items)


def _parse_rule(spec: Any) -> Rule:
    if not isinstance(spec, Mapping) or "group" not in spec:
        raise ConfigError("tiered: every rule needs a `group` and a `match` mapping")
    match = spec.get("match") or {}
    if not isinstance(match, Mapping):
        raise ConfigError("tiered: `match` must be a mapping")
    unknown = set(match) - {"tags", "metadata", *_SCALAR_FIELDS}
    if unknown:
        raise ConfigError(f"tiered: unknown match keys {sorted(unknown)}")
    metadata = match.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise ConfigError("tiered: `match.metadata` must be a mapping")
    return Rule(
        group=str(spec["group"]),
        tags=_any_of(match["tags"]) if "tags" in match else None,
        metadata=tuple((str(k), _any_of(v)) for k, v in metadata.items()),
        fields=tuple((_SCALAR_FIELDS[k], _any_of(match[k])) for k in _SCALAR_FIELDS if k in match),
    )


class Tiered:
    def __init__(self, options: Mapping[str, Any]) -> None:
        rules = options.get("rules") or []
        if not isinstance(rules, list):
            raise ConfigError("tiered: `rules` must be a list")
        self.rules = tuple(_parse_rule(r) for r in rules)
        default = options.get("default")
        self.default = str(default) if default else None
        self._fallback = Priority({})

    def referenced_groups(self) -> list[str]:
        """Groups the rules may route to; the router checks they exist at startup."""
        names = [r.group for r in self.rules]
        return names + ([self.default] if self.default else [])

    def target(self, request: RouteRequest) -> str | None:
        for rule in self.rules:
            if rule.matches(request):
                return rule.group
        return self.default

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]:
        group = self.target(request)
        if group is None or ctx.order_group is None:
            return self._fallback.order(deployments, request, ctx)
        return ctx.order_group(group, request)
