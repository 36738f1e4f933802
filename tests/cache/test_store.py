"""Cached responses round-trip exactly through both backends, streams chunk for chunk."""

from __future__ import annotations

import pytest

from faregate.cache import CachedResponse, ResponseCache, cache_key
from faregate.cache.store import decode, encode
from faregate.store.counters import CounterStore

CHUNKS = [
    b'data: {"choices":[{"delta":{"content":"h\\u00e9"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"\xc3\xa9\\n"}}]}\n\n',
    b"data: [DONE]\n\n",
]


async def test_a_json_answer_round_trips(store: CounterStore) -> None:
    cache = ResponseCache(store)
    key = cache_key("chat", {"model": "m", "messages": [], "temperature": 0})
    body = {"id": "x", "choices": [{"message": {"content": "hé"}}]}
    cached = CachedResponse("chat", body, None, {"prompt_tokens": 3}, 1_500, 3_000, 1.5)
    assert await cache.put(key, cached, ttl_s=60)
    assert await cache.get(key) == cached
    await cache.delete(key)
    assert await cache.get(key) is None


async def test_a_stream_replays_the_same_chunks(store: CounterStore) -> None:
    cache = ResponseCache(store)
    recorder = cache.recorder("k", "chat", ttl_s=60)
    for chunk in CHUNKS:
        recorder.add(chunk)
    assert await recorder.save({"completion_tokens": 2}, 10, 20)
    hit = await cache.get("k")
    assert hit is not None and hit.chunks == CHUNKS and hit.body is None
    assert (hit.usage, hit.cost_nanos, hit.price_nanos) == ({"completion_tokens": 2}, 10, 20)


async def test_oversized_streams_and_zero_ttls_are_not_stored(store: CounterStore) -> None:
    cache = ResponseCache(store, max_entry_bytes=64)
    recorder = cache.recorder("big", "chat", ttl_s=60)
    for chunk in CHUNKS * 3:
        recorder.add(chunk)
    assert recorder.abandoned and not await recorder.save({}, 0, 0)
    assert not await cache.put("zero", CachedResponse("chat", {}, None), ttl_s=0)
    assert await cache.get("big") is None and await cache.get("zero") is None


async def test_an_unreadable_entry_is_a_miss(store: CounterStore) -> None:
    await store.set_bytes("resp:bad", b"not json\nat all", 60)
    assert await ResponseCache(store).get("bad") is None
    assert await store.get_bytes("resp:bad") is None


@pytest.mark.parametrize(
    "data", [b"", b"{}", b'{"v":1,"chunks":[5]}\nabc', b'{"v":1,"chunks":null}\n', b"\xff\n"]
)
def test_decode_rejects_damaged_entries(data: bytes) -> None:
    assert decode(data) is None


def test_encoding_keeps_arbitrary_bytes() -> None:
    chunks = [bytes(range(256)), b"\n\n", b""]
    decoded = decode(encode(CachedResponse("chat", None, chunks)))
    assert decoded is not None and decoded.chunks == chunks
