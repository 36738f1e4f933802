"""Counter/hold backends for rate limits, budgets and the cache: the CounterStore contract,
MemoryCounterStore (one process) and, imported explicitly so that domain code never pulls
in redis, `faregate.store.counters.redis_store.RedisCounterStore` (many replicas)."""

from faregate.store.counters.base import (
    Admission,
    CounterStore,
    CounterStoreUnavailable,
    HoldReused,
    LeaseSpec,
    LimitResult,
    LimitSpec,
    ReserveResult,
    ReserveSpec,
)
from faregate.store.counters.memory import MemoryCounterStore

__all__ = [
    "Admission",
    "CounterStore",
    "CounterStoreUnavailable",
    "HoldReused",
    "LeaseSpec",
    "LimitResult",
    "LimitSpec",
    "MemoryCounterStore",
    "ReserveResult",
    "ReserveSpec",
]
