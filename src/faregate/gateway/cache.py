"""The pipeline's response cache: decides per call (config, headers, key opt-ins), replays
hits as JSON or as the same stream chunks, and bills a hit by the configured policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson

from faregate.cache import (
    CachedResponse,
    CachePolicy,
    ResponseCache,
    cache_key,
    hit_price,
    hit_share,
)
from faregate.cache.policy import CacheDecision, sampled
from faregate.gateway.call import Call
from faregate.money import from_nanos, to_nanos
from faregate.providers.base import ChatResult
from faregate.usage import Usage


def _usage(data: dict[str, Any]) -> Usage:
    fields = {k: v for k, v in data.items() if k in Usage.__dataclass_fields__}
    fields["seconds"] = Decimal(str(fields.get("seconds", "0")))
    return Usage(**fields)


class _Recorder:
    def __init__(self, inner: Any, call: Call):
        self._inner = inner
        self._call = call

    def add(self, chunk: dict[str, Any]) -> None:
        self._inner.add(orjson.dumps(chunk))

    async def finish(self, call: Call) -> None:
        if call.usage is not None and call.ok:
            await self._inner.save(call.usage.to_dict(), to_nanos(call.cost), to_nanos(call.price))


class GatewayCache:
    def __init__(self, cache: ResponseCache, policy: CachePolicy):
        self._cache = cache
        self._policy = policy
        # The decisions for calls with no cache header and a key without settings, by
        # (kind, sampled): `decide` reads nothing else of theirs (see `_decision`).
        self._plain: dict[tuple[str, bool], CacheDecision] = {}

    def wanted(self, call: Call) -> bool:
        """Whether the cache has anything to do for this call (look up, store, or both):
        the pipeline asks before it awaits `lookup` and `store`, so that a call the cache
        cannot serve (a sampled answer, most of them) costs it one decision, remembered."""
        decision = self._decision(call)
        return decision.lookup or decision.store

    def _decision(self, call: Call) -> CacheDecision:
        decision = call.scratch.get("cache")
        if decision is not None:
            return decision  # type: ignore[no-any-return]
        settings = call.principal.settings
        if not call.request_headers and not settings:
            # The usual call: no switch, no Cache-Control, no TTL of its own, no opt-in of
            # its key. The policy's decision then depends on the kind and on whether the
            # answer is sampled alone, so it is made once per pair (about 2% of a sampled
            # chat request's instructions when made every time: bench/HISTORY.md).
            plain = (call.kind, sampled(call.kind, call.body))
            decision = self._plain.get(plain)
            if decision is None:
                decision = self._plain[plain] = self._policy.decide(call.kind, call.body, {})
        else:
            decision = self._policy.decide(
                call.kind,
                call.body,
                call.request_headers,
                key_cache=settings.get("cache"),
                key_nonzero_temperature=settings.get("cache_nonzero_temperature"),
                key_images=settings.get("cache_images"),
            )
        call.scratch["cache"] = decision
        return decision

    @staticmethod
    def _key(call: Call) -> str:
        # Taken before the upstream call (adapters may rewrite the body). Streamed and JSON
        # answers are stored apart; tenants never share entries.
        key = call.scratch.get("cache_key")
        if key is None:
            namespace = f"{call.principal.customer_id or call.principal.key_id}:{int(call.stream)}"
            key = call.scratch["cache_key"] = cache_key(call.kind, call.body, namespace=namespace)
        return key  # type: ignore[no-any-return]

    async def lookup(self, call: Call) -> Any | None:
        decision = self._decision(call)
        if not (decision.lookup or decision.store):  # a kind with no key (moderations) too
            return None
        key = self._key(call)  # now, before the upstream call, for `store` as well
        if not decision.lookup:
            return None
        hit: CachedResponse | None = await self._cache.get(key)
        if hit is None:
            return None
        call.cache_hit = True
        call.usage = _usage(hit.usage)
        original = from_nanos(hit.price_nanos)
        call.price = hit_price(original, self._policy)
        call.cost = Decimal(0)
        call.saved = original - call.price
        call.billed_share = hit_share(self._policy)
        if hit.chunks is not None:
            return _replay(hit.chunks)
        return ChatResult(body=hit.body or {}, usage=call.usage)

    async def store(self, call: Call, result: Any) -> None:
        decision = self._decision(call)
        if decision.store and call.ok and call.usage is not None:
            entry = CachedResponse(
                call.kind,
                result.body,
                None,
                call.usage.to_dict(),
                to_nanos(call.cost),
                to_nanos(call.price),
            )
            await self._cache.put(self._key(call), entry, decision.ttl_s)

    def recorder(self, call: Call) -> _Recorder | None:
        decision = self._decision(call)
        if not decision.store:
            return None
        return _Recorder(self._cache.recorder(self._key(call), call.kind, decision.ttl_s), call)


async def _replay(chunks: list[bytes]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield orjson.loads(chunk)
