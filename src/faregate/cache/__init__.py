"""Exact-match response cache: keys over the output-relevant request, the policy deciding
lookup/store/TTL, and entries kept in a CounterStore (in-process LRU or Redis)."""

from faregate.cache.keys import cache_key, normalize
from faregate.cache.policy import CacheDecision, CachePolicy
from faregate.cache.store import (
    CachedResponse,
    ChunkRecorder,
    ResponseCache,
    hit_price,
    hit_share,
)

__all__ = [
    "CacheDecision",
    "CachePolicy",
    "CachedResponse",
    "ChunkRecorder",
    "ResponseCache",
    "cache_key",
    "hit_price",
    "hit_share",
    "normalize",
]
