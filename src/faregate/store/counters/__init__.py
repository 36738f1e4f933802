"""Counter/hold backends for rate limits, budgets and the cache: the CounterStore contract,
MemoryCounterStore (one process) and, imported explicitly so that domain code never pulls
in redis, `faregate.store.counters.redis_store.RedisCounterStore` (many replicas)."""

from faregate.store.counters.base import (
    CounterStore,
    CounterStoreUnavailable,
    HoldReused,
    LimitResult,
    LimitSpec,
    ReserveResult,
    ReserveSpec,
)
from faregate.store.counters.memory import MemoryCounterStore

__all__ = [
    "CounterStore",
    "CounterStoreUnavailable",
    "HoldReused",
    "LimitResult",
    "LimitSpec",
    "MemoryCounterStore",
    "ReserveResult",
    "ReserveSpec",
]
