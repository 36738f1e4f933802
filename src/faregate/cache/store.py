"""Cached responses in the counter store's byte space: a JSON header plus the raw SSE chunks,
so a streamed hit replays byte-identical chunks. Reaches storage only through CounterStore;
an unreadable entry is treated as a miss, never as an error."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from faregate.cache.policy import CachePolicy
from faregate.store.counters.base import CounterStore

FORMAT_VERSION = 1
DEFAULT_MAX_ENTRY_BYTES = 8 * 2**20


@dataclass(slots=True)
class CachedResponse:
    kind: str
    body: dict[str, Any] | None  # the JSON answer of a non-streamed request
    chunks: list[bytes] | None  # the SSE payloads of a streamed one, as sent
    usage: dict[str, Any] = field(default_factory=dict)
    cost_nanos: int = 0
    price_nanos: int = 0
    created_at: float = field(default_factory=time.time)


def encode(response: CachedResponse) -> bytes:
    chunks = response.chunks
    header = {
        "v": FORMAT_VERSION,
        "kind": response.kind,
        "body": response.body,
        "usage": response.usage,
        "cost_nanos": response.cost_nanos,
        "price_nanos": response.price_nanos,
        "created_at": response.created_at,
        "chunks": None if chunks is None else [len(c) for c in chunks],
    }
    # orjson never writes a raw newline, so the first one ends the header.
    return orjson.dumps(header) + b"\n" + b"".join(chunks or ())


def decode(data: bytes) -> CachedResponse | None:
    head, sep, tail = data.partition(b"\n")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        return None
    if not sep or not isinstance(header, dict) or header.get("v") != FORMAT_VERSION:
        return None
    try:
        return _from_header(header, tail)
    except (KeyError, TypeError, ValueError):
        return None


def _from_header(header: dict[str, Any], tail: bytes) -> CachedResponse | None:
    chunks: list[bytes] | None = None
    if header["chunks"] is not None:
        chunks, offset = [], 0
        for length in header["chunks"]:
            chunks.append(tail[offset : offset + int(length)])
            offset += int(length)
        if offset != len(tail):
            return None
    return CachedResponse(
        kind=str(header["kind"]),
        body=header["body"],
        chunks=chunks,
        usage=dict(header["usage"]),
        cost_nanos=int(header["cost_nanos"]),
        price_nanos=int(header["price_nanos"]),
        created_at=float(header["created_at"]),
    )


def hit_share(policy: CachePolicy) -> Decimal:
    """The part of the original usage and price a cache hit is billed: 0 or the share."""
    return policy.share if policy.hit_billing == "share" else Decimal(0)


def hit_price(original_price: Decimal, policy: CachePolicy) -> Decimal:
    """What a cache hit is billed: nothing, or the configured share of the original price."""
    return original_price * hit_share(policy)


class ResponseCache:
    def __init__(
        self,
        store: CounterStore,
        *,
        prefix: str = "resp:",
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self.max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> CachedResponse | None:
        data = await self._store.get_bytes(self._prefix + key)
        if data is None:
            return None
        response = decode(data)
        if response is None:
            await self._store.delete(self._prefix + key)
        return response

    async def put(self, key: str, response: CachedResponse, ttl_s: float) -> bool:
        """Store unless empty-lived or too large; returns whether it was stored."""
        data = encode(response)
        if ttl_s <= 0 or len(data) > self.max_entry_bytes:
            return False
        await self._store.set_bytes(self._prefix + key, data, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        await self._store.delete(self._prefix + key)

    def recorder(self, key: str, kind: str, ttl_s: float) -> ChunkRecorder:
        return ChunkRecorder(self, key, kind, ttl_s)


class ChunkRecorder:
    """Collects a stream's chunks as they pass to the client and stores them at the end.
    Gives up (stores nothing) once the stream outgrows the cache's entry limit."""

    def __init__(self, cache: ResponseCache, key: str, kind: str, ttl_s: float) -> None:
        self._cache = cache
        self._key = key
        self._kind = kind
        self._ttl_s = ttl_s
        self._chunks: list[bytes] = []
        self._size = 0
        self.abandoned = False

    def add(self, chunk: bytes) -> None:
        if self.abandoned:
            return
        self._size += len(chunk)
        if self._size > self._cache.max_entry_bytes:
            self.abandoned, self._chunks = True, []
            return
        self._chunks.append(bytes(chunk))

    async def save(self, usage: dict[str, Any], cost_nanos: int, price_nanos: int) -> bool:
        """Call only for a stream that completed normally."""
        if self.abandoned or not self._chunks:
            return False
        response = CachedResponse(self._kind, None, self._chunks, usage, cost_nanos, price_nanos)
        return await self._cache.put(self._key, response, self._ttl_s)
