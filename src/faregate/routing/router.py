"""Turns a public model name and a RouteRequest into an ordered plan of deployments:
the group's strategy first, failover and fallback groups after, unhealthy ones skipped.
Chooses only; failover.py makes the calls and health.py keeps score."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from faregate.config import ConfigError, Deployment, ModelGroup
from faregate.routing.ab_split import Assignment
from faregate.routing.base import CostEstimator, HealthView, RouteRequest, Strategy, StrategyContext
from faregate.routing.cheapest import Cheapest, within_max_price
from faregate.routing.errors import ContextLengthExceeded, ModelNotFound, NoHealthyDeployment
from faregate.routing.strategies import STRATEGIES


class Router:
    """Built once at startup from the configured model groups; raises ConfigError early."""

    def __init__(
        self,
        groups: Mapping[str, ModelGroup],
        *,
        health: HealthView,
        strategies: Mapping[str, type[Strategy]] = STRATEGIES,
        estimator: CostEstimator | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._groups = {g.name: g for g in groups.values()}
        self._health = health
        self._estimator = estimator
        self._rng = rng or random.Random()
        self._ctx = StrategyContext(health, self._rng, estimator, self._order_named)
        self._names = _name_index(self._groups.values())
        self._strategies = {g.name: _build(g, strategies) for g in self._groups.values()}
        self._validate()
        self._arms = _arms_by_deployment(self._groups.values(), self._strategies)
        # Groups whose own strategy, or a `tiered` target's, assigns A/B arms.
        self._experimental = {
            name
            for name, g in self._groups.items()
            if any(hasattr(self._strategies[n], "assign") for n in self._targets_closure(g))
        }
        # Groups whose reach depends on no request fact (no `tiered` anywhere in it).
        self._fixed_reach = {
            name: self._reach(g, None)
            for name, g in self._groups.items()
            if not any(hasattr(self._strategies[n], "target") for n in self._closure(g))
        }
        health.register(d.id for g in self._groups.values() for d in g.deployments)

    def resolve(self, name: str) -> ModelGroup:
        """The group behind a public model name or alias."""
        group = self._names.get(name)
        if group is None:
            raise ModelNotFound(name)
        return group

    def plan(self, group: ModelGroup, request: RouteRequest) -> list[Deployment]:
        """Deployments to try, in order: the strategy's choice, the rest of the group, then
        `fallbacks` groups. Deployments too small for the prompt are left out (the group's
        `context_window_fallbacks` stand in when none fits), so are those above
        `request.max_price`, and those whose breaker is open or that are cooling down.

        When every candidate is unavailable this raises NoHealthyDeployment (503 with
        Retry-After of the soonest recovery) rather than sending traffic to a known-bad
        upstream; a half-open breaker counts as available, so recovery is still probed.
        """
        primary = self._fit(self._order(group, request), request)
        if not primary:
            primary = self._fit(self._order_all(group.context_window_fallbacks, request), request)
        candidates = _dedupe(
            primary + self._fit(self._order_all(group.fallbacks, request), request)
        )
        if not candidates:
            raise ContextLengthExceeded(group.name, request.input_tokens)
        candidates = within_max_price(candidates, request, self._estimator)
        waits = {d.id: self._health.available_in(d.id) for d in candidates}
        healthy = [d for d in candidates if waits[d.id] == 0.0]
        if not healthy:
            raise NoHealthyDeployment(group.name, min(waits.values()))
        return healthy

    def context_plan(self, group: ModelGroup, request: RouteRequest) -> list[Deployment]:
        """The plan to switch to after a context-length failure ([] when there is none)."""
        if not group.context_window_fallbacks:  # most groups: asked on every request
            return []
        ordered = self._fit(self._order_all(group.context_window_fallbacks, request), request)
        if request.max_price is not None and ordered:
            ordered = within_max_price(ordered, request, self._estimator)
        return [d for d in _dedupe(ordered) if self._health.available(d.id)]

    def reachable(self, group: ModelGroup, request: RouteRequest | None = None) -> list[Deployment]:
        """Every deployment `plan` or `context_plan` may hand to failover for a request to
        `group`, whatever the health, prices or prompt size: the group's own deployments (or,
        for `tiered`, those of the group its rules pick for `request`; every target when
        `request` is None), its `context_window_fallbacks` and its `fallbacks`. Worst-case
        estimates are taken over this set, so a hold covers whichever deployment serves."""
        fixed = self._fixed_reach.get(group.name)
        return list(fixed) if fixed is not None else self._reach(group, request)

    def deployments(self) -> dict[str, Deployment]:
        """Every configured deployment by id."""
        return {d.id: d for g in self._groups.values() for d in g.deployments}

    def assigned_arm(self, group: ModelGroup, request: RouteRequest) -> Assignment | None:
        """The A/B arm a request to `group` is assigned (for `tiered`, in the group its rules
        pick), whatever the health of the arms' deployments: the one `plan` puts first when
        every deployment is available. None outside every experiment."""
        if group.name not in self._experimental:  # most groups: asked on every request
            return None
        strategy: Any = self._strategies[group.name]
        target = getattr(strategy, "target", None)
        if target is None:
            return strategy.assign(request, self._ctx)  # type: ignore[no-any-return]
        chosen = target(request)
        return self.assigned_arm(self._groups[chosen], request) if chosen else None

    def experiment_arm(self, deployment: Deployment) -> Assignment | None:
        """The A/B arm a request belongs to, given the deployment that actually served it."""
        return self._arms.get(deployment.id)

    def experiments(self) -> dict[str, dict[str, Any]]:
        """Configured A/B experiments: id -> {"models": [group], "arms": [{arm, deployment}]}."""
        found: dict[str, dict[str, Any]] = {}
        for group in self._groups.values():
            for d in group.deployments:
                assignment = self._arms.get(d.id)
                if assignment is None:
                    continue
                entry = found.setdefault(assignment.experiment, {"models": [], "arms": []})
                if group.name not in entry["models"]:
                    entry["models"].append(group.name)
                entry["arms"].append({"arm": assignment.arm, "deployment": d.id})
        return found

    # -- internals ------------------------------------------------------------------

    def _order(self, group: ModelGroup, request: RouteRequest) -> list[Deployment]:
        return self._strategies[group.name].order(group.deployments, request, self._ctx)

    def _reach(self, group: ModelGroup, request: RouteRequest | None) -> list[Deployment]:
        found = self._ordered_set(group, request)
        for name in (*group.context_window_fallbacks, *group.fallbacks):
            found += self._ordered_set(self._groups[name], request)
        return _dedupe(found)

    def _closure(self, group: ModelGroup) -> set[str]:
        """Names of every group a request to `group` may be routed through."""
        return self._with_targets([group.name, *group.context_window_fallbacks, *group.fallbacks])

    def _targets_closure(self, group: ModelGroup) -> set[str]:
        """Names of `group` and of every group its `tiered` rules may route to."""
        return self._with_targets([group.name])

    def _with_targets(self, names: list[str]) -> set[str]:
        """`names` and every group their `tiered` rules may route to, transitively."""
        seen: set[str] = set()
        while names:
            name = names.pop()
            if name not in seen:
                seen.add(name)
                names.extend(_targets(self._strategies[name]))
        return seen

    def _ordered_set(self, group: ModelGroup, request: RouteRequest | None) -> list[Deployment]:
        """The deployments `_order` may return for `group` (a superset when request is None)."""
        strategy = self._strategies[group.name]
        target = getattr(strategy, "target", None)
        if target is None:
            return list(group.deployments)
        if request is not None:
            chosen = target(request)
            if chosen is None:
                return list(group.deployments)
            return self._ordered_set(self._groups[chosen], request)
        found = list(group.deployments)
        for name in _targets(strategy):
            found += self._ordered_set(self._groups[name], None)
        return found

    def _order_named(self, name: str, request: RouteRequest) -> list[Deployment]:
        return self._order(self._groups[name], request)

    def _order_all(self, names: Iterable[str], request: RouteRequest) -> list[Deployment]:
        return [d for name in names for d in self._order_named(name, request)]

    @staticmethod
    def _fit(deployments: list[Deployment], request: RouteRequest) -> list[Deployment]:
        tokens = request.input_tokens
        return [
            d for d in deployments if d.max_input_tokens is None or tokens <= d.max_input_tokens
        ]

    def _validate(self) -> None:
        for group in self._groups.values():
            strategy = self._strategies[group.name]
            for name in (*group.fallbacks, *group.context_window_fallbacks, *_targets(strategy)):
                if name not in self._groups:
                    raise ConfigError(f"model {group.name!r} routes to unknown model {name!r}")
            ids = {d.id for d in group.deployments}
            for dep in getattr(strategy, "referenced_deployments", list)():
                if dep not in ids:
                    raise ConfigError(f"model {group.name!r}: unknown deployment {dep!r}")
            if isinstance(strategy, Cheapest) and self._estimator is None:
                raise ConfigError(f"model {group.name!r}: cheapest routing needs a price catalog")
        self._check_cycles()

    def _check_cycles(self) -> None:
        edges = {name: _targets(s) for name, s in self._strategies.items()}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                raise ConfigError(f"tiered routing loops: {' -> '.join((*path, name))}")
            for target in edges[name]:
                visit(target, (*path, name))

        for name in edges:
            visit(name, ())


def _build(group: ModelGroup, strategies: Mapping[str, type[Strategy]]) -> Strategy:
    cls = strategies.get(group.strategy)
    if cls is None:
        known = ", ".join(sorted(strategies))
        raise ConfigError(f"model {group.name!r}: unknown strategy {group.strategy!r} ({known})")
    return cls(group.strategy_options)


def _arms_by_deployment(
    groups: Iterable[ModelGroup], strategies: Mapping[str, Strategy]
) -> dict[str, Assignment]:
    arms: dict[str, Assignment] = {}
    for group in groups:
        arm_of = getattr(strategies[group.name], "arm_of", None)
        if arm_of is None:
            continue
        for d in group.deployments:
            assignment = arm_of(d.id)
            if assignment is not None:
                arms[d.id] = assignment
    return arms


def _targets(strategy: Any) -> list[str]:
    return list(getattr(strategy, "referenced_groups", list)())


def _name_index(groups: Iterable[ModelGroup]) -> dict[str, ModelGroup]:
    index: dict[str, ModelGroup] = {}
    for group in groups:
        for name in (group.name, *group.aliases):
            if name in index:
                raise ConfigError(f"model name {name!r} is used twice")
            index[name] = group
    return index


def _dedupe(deployments: list[Deployment]) -> list[Deployment]:
    unique: dict[str, Deployment] = {}
    for d in deployments:
        unique.setdefault(d.id, d)
    return list(unique.values())
