"""`ab_split` strategy: splits traffic between deployments by percentage for an experiment.
An assignment is a hash of experiment and sticky id, so a key (or user) always lands on the
same arm; without a sticky id each request is drawn at random (from its request id).
Records nothing itself.

Options:
    experiment: new-image-model
    arms:
      - {deployment: images/openai, percent: 50}
      - {deployment: images/flux, percent: 50, name: flux}   # name defaults to the deployment
    sticky: key          # key | user | none (default key)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faregate.config import ConfigError, Deployment
from faregate.routing.base import RouteRequest, StrategyContext

BUCKETS = 10_000
_STICKY = {"key": "key_id", "user": "user", "none": None}


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    deployment: str
    upper: int  # exclusive upper bucket bound of this arm's range


@dataclass(frozen=True, slots=True)
class Assignment:
    experiment: str
    arm: str
    deployment: str


def bucket(experiment: str, sticky_id: str) -> int:
    """Stable bucket in [0, BUCKETS) for one experiment and one sticky id."""
    digest = hashlib.blake2b(f"{experiment}\x00{sticky_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _parse_arms(raw: Any) -> tuple[Arm, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("ab_split: `arms` must be a non-empty list")
    arms, upper = [], 0
    for spec in raw:
        if not isinstance(spec, Mapping) or "deployment" not in spec or "percent" not in spec:
            raise ConfigError("ab_split: every arm needs `deployment` and `percent`")
        upper += round(float(spec["percent"]) * BUCKETS / 100)
        arms.append(
            Arm(str(spec.get("name") or spec["deployment"]), str(spec["deployment"]), upper)
        )
    if upper != BUCKETS:
        raise ConfigError("ab_split: arm percentages must add up to 100")
    return tuple(arms)


class ABSplit:
    def __init__(self, options: Mapping[str, Any]) -> None:
        if not options.get("experiment"):
            raise ConfigError("ab_split: `experiment` is required")
        self.experiment = str(options["experiment"])
        self.arms = _parse_arms(options.get("arms"))
        sticky = str(options.get("sticky") or "key")
        if sticky not in _STICKY:
            raise ConfigError("ab_split: `sticky` must be key, user or none")
        self._sticky_attr = _STICKY[sticky]

    def referenced_deployments(self) -> list[str]:
        return [a.deployment for a in self.arms]

    def arm_of(self, deployment_id: str) -> Assignment | None:
        """The arm a deployment belongs to: attribute a request by who actually served it."""
        for arm in self.arms:
            if arm.deployment == deployment_id:
                return Assignment(self.experiment, arm.name, arm.deployment)
        return None

    def assign(self, request: RouteRequest, ctx: StrategyContext) -> Assignment:
        """The request's arm. Without a sticky id it is drawn from the request id, so asking
        twice for one request (the pipeline records the arm, the plan puts it first) gives
        one answer; from `ctx.rng` when the request has no id either."""
        sticky_id = getattr(request, self._sticky_attr) if self._sticky_attr else None
        drawn = sticky_id or request.request_id
        b = bucket(self.experiment, drawn) if drawn else ctx.rng.randrange(BUCKETS)
        arm = next(a for a in self.arms if b < a.upper)
        return Assignment(self.experiment, arm.name, arm.deployment)

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]:
        chosen = self.assign(request, ctx).deployment
        # The assigned arm first; the others, by priority, are its failover.
        return sorted(deployments, key=lambda d: (d.id != chosen, d.priority))
