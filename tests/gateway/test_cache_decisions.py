"""The gateway's cache decision per call: the one remembered for plain calls (no cache
header, a key without settings) is the policy's own, and a call the cache cannot serve
never reaches the cache's store."""

from __future__ import annotations

from itertools import product
from typing import Any

import pytest

from faregate.auth.principal import Principal
from faregate.cache import CachePolicy, ResponseCache
from faregate.gateway.cache import GatewayCache
from faregate.gateway.call import Call
from faregate.store.counters import MemoryCounterStore

POLICIES = [
    {"enabled": True},
    {"enabled": True, "allow_nonzero_temperature": True},
    {"enabled": True, "images": False},
    {"enabled": True, "opt_in": True},
    {"enabled": True, "default_ttl": 60, "max_ttl": 30},
]
KINDS = ["chat", "embeddings", "images", "moderations", "transcriptions"]
BODIES: list[dict[str, Any]] = [
    {},
    {"temperature": 0},
    {"temperature": 0.0},
    {"temperature": 0.7},
    {"temperature": "0"},
    {"temperature": None},
]


class _Refusing(MemoryCounterStore):
    """A store that fails any use: a call the cache cannot serve must not reach it."""

    async def get_bytes(self, key: str) -> bytes | None:
        raise AssertionError("looked up")

    async def set_bytes(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        raise AssertionError("stored")


def _call(kind: str, body: dict[str, Any], **fields: Any) -> Call:
    return Call("req_1", Principal("k", "p", **fields), kind, "m", dict(body))


@pytest.mark.parametrize("config", POLICIES)
def test_a_plain_calls_remembered_decision_is_the_policys(config: dict[str, Any]) -> None:
    policy = CachePolicy.from_config(config)
    cache = GatewayCache(ResponseCache(MemoryCounterStore()), policy)
    for _ in range(2):  # made, then remembered
        for kind, body in product(KINDS, BODIES):
            call = _call(kind, body)
            assert cache._decision(call) == policy.decide(kind, body, {}), (kind, body)
            assert call.scratch["cache"] == policy.decide(kind, body, {})


def test_a_header_or_a_key_setting_takes_the_whole_decision() -> None:
    policy = CachePolicy.from_config({"enabled": True, "opt_in": True})
    cache = GatewayCache(ResponseCache(MemoryCounterStore()), policy)
    plain = _call("chat", {"temperature": 0})
    assert not cache.wanted(plain)  # opt-in: nobody asked
    switched = _call("chat", {"temperature": 0})
    switched.request_headers = {"x-faregate-cache": "on"}
    assert cache.wanted(switched)
    keyed = _call("chat", {"temperature": 0}, settings={"cache": True})
    assert cache.wanted(keyed)
    assert not cache.wanted(_call("chat", {"temperature": 0}, settings={"max_price": 1}))


async def test_a_call_the_cache_cannot_serve_never_reaches_its_store() -> None:
    cache = GatewayCache(ResponseCache(_Refusing()), CachePolicy.from_config({"enabled": True}))
    call = _call("chat", {"temperature": 1})
    assert not cache.wanted(call)
    assert await cache.lookup(call) is None
    assert cache.recorder(call) is None
    greedy = _call("chat", {"temperature": 0})
    assert cache.wanted(greedy)
    with pytest.raises(AssertionError, match="looked up"):
        await cache.lookup(greedy)
