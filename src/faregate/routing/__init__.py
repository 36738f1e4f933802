"""Routing and resilience: which deployment serves a request (Router + strategies), how a
call fails over (call_with_failover), and what is healthy (HealthRegistry). No I/O here
except health_redis, which the app wires in when replicas share Redis."""

from faregate.routing.ab_split import Assignment
from faregate.routing.base import (
    CostEstimator,
    LatencyStats,
    RouteRequest,
    Strategy,
    StrategyContext,
)
from faregate.routing.breaker import BreakerPolicy
from faregate.routing.errors import (
    ContextLengthExceeded,
    MaxPriceExceeded,
    ModelNotFound,
    NoHealthyDeployment,
)
from faregate.routing.experiments import ExperimentStats
from faregate.routing.failover import (
    Attempted,
    FailedAttempt,
    call_with_failover,
    connect_stream_with_failover,
)
from faregate.routing.health import HealthRegistry, StateChange
from faregate.routing.router import Router
from faregate.routing.shared import SharedHealth
from faregate.routing.strategies import STRATEGIES

__all__ = [
    "STRATEGIES",
    "Assignment",
    "Attempted",
    "BreakerPolicy",
    "ContextLengthExceeded",
    "CostEstimator",
    "ExperimentStats",
    "FailedAttempt",
    "HealthRegistry",
    "LatencyStats",
    "MaxPriceExceeded",
    "ModelNotFound",
    "NoHealthyDeployment",
    "RouteRequest",
    "Router",
    "SharedHealth",
    "StateChange",
    "Strategy",
    "StrategyContext",
    "call_with_failover",
    "connect_stream_with_failover",
]
