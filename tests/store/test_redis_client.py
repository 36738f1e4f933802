"""PipelinedRedis: script calls made in one turn of the event loop travel as one pipeline,
and each caller still gets its own reply, its own error, and the NOSCRIPT fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from faregate.store.counters import CounterStoreUnavailable
from faregate.store.counters.redis_store import RedisCounterStore
from faregate.store.redis_client import PipelinedRedis, pack, pack_one

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ON_NEGATIVE = (
    "if tonumber(ARGV[1]) < 0 then return redis.error_reply('negative') end "
    "return redis.call('INCRBY', KEYS[1], ARGV[1])"
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis.from_url(redis_url)
    yield client
    await client.aclose()


def count_pipelines(client: PipelinedRedis, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the pipelines the client writes."""
    sizes: list[int] = []
    real = client._write

    def spy(conn: Any, batch: list[Any]) -> None:
        sizes.append(len(batch))
        real(conn, batch)

    monkeypatch.setattr(client, "_write", spy)
    return sizes


async def test_calls_made_in_one_turn_travel_as_one_pipeline_and_each_gets_its_reply(
    client: PipelinedRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = client.register_script(INCR)
    await script(keys=[redis_prefix + "warm"], args=[0])  # loaded once, outside the count
    sizes = count_pipelines(client, monkeypatch)
    replies = await asyncio.gather(
        *(script(keys=[f"{redis_prefix}k{i % 5}"], args=[i]) for i in range(50))
    )
    assert sizes == [50]
    # Each key k received the increments i with i % 5 == k, in the order they were made.
    running = [0] * 5
    expected = []
    for i in range(50):
        running[i % 5] += i
        expected.append(running[i % 5])
    assert replies == expected


async def test_the_first_calls_open_the_connection_and_later_turns_write_at_once(
    client: PipelinedRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = client.register_script(INCR)
    sizes = count_pipelines(client, monkeypatch)
    # No connection yet: the turn's calls wait for it together, then go as one pipeline.
    first = await asyncio.gather(*(script(keys=[redis_prefix + "o"], args=[1]) for _ in range(3)))
    assert sorted(first) == [1, 2, 3] and sizes == [3]
    sending = len(client._sending)
    later = await asyncio.gather(*(script(keys=[redis_prefix + "o"], args=[1]) for _ in range(4)))
    assert later == [4, 5, 6, 7] and sizes == [3, 4]
    assert len(client._sending) == sending  # written in the turn's callback: no task


async def test_closing_waits_for_the_replies_of_calls_already_sent(
    redis_url: str, redis_prefix: str
) -> None:
    client = PipelinedRedis.from_url(redis_url)
    script = client.register_script(INCR)
    await script(keys=[redis_prefix + "warm"], args=[0])  # the connection is open
    calls = [asyncio.ensure_future(script(keys=[redis_prefix + "z"], args=[1])) for _ in range(20)]
    await asyncio.sleep(0)  # the calls are queued
    await asyncio.sleep(0)  # and written, their replies not read yet
    await client.aclose()
    assert sorted(await asyncio.gather(*calls)) == list(range(1, 21))


async def test_a_call_whose_arguments_cannot_be_sent_fails_alone(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    script = client.register_script(INCR)
    await script(keys=[redis_prefix + "warm"], args=[0])
    results = await asyncio.gather(
        script(keys=[redis_prefix + "b"], args=[1]),
        script(keys=[redis_prefix + "b"], args=[None]),
        script(keys=[redis_prefix + "b"], args=[True]),
        script(keys=[redis_prefix + "b"], args=[2]),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[3] == 3
    assert isinstance(results[1], redis_errors.DataError)
    assert isinstance(results[2], redis_errors.DataError)


async def test_a_script_error_reaches_only_its_own_caller(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    script = client.register_script(FAIL_ON_NEGATIVE)
    # Loaded first: on a Redis that does not know the script yet, each caller loads it and
    # retries on its own, and the retries may then run in any order.
    await script(keys=[redis_prefix + "warm"], args=[0])
    results = await asyncio.gather(
        script(keys=[redis_prefix + "a"], args=[2]),
        script(keys=[redis_prefix + "a"], args=[-1]),
        script(keys=[redis_prefix + "a"], args=[3]),
        return_exceptions=True,
    )
    assert results[0] == 2 and results[2] == 5
    assert isinstance(results[1], redis_errors.ResponseError)
    assert "negative" in str(results[1])


async def test_scripts_flushed_from_the_server_are_loaded_again(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    script = client.register_script(INCR)
    assert await script(keys=[redis_prefix + "n"], args=[1]) == 1
    await client.script_flush()
    replies = await asyncio.gather(*(script(keys=[redis_prefix + "n"], args=[1]) for _ in range(3)))
    assert sorted(replies) == [2, 3, 4]


async def test_registered_scripts_have_redis_pys_sha_and_call_signature(
    client: PipelinedRedis, redis_url: str, redis_prefix: str
) -> None:
    script = client.register_script(INCR)
    plain = aioredis.Redis.from_url(redis_url)
    try:
        assert script.sha == plain.register_script(INCR).sha  # the same SHA1 as redis-py's
        assert await script([redis_prefix + "s"], [2]) == 2  # positional keys and args
        assert await script(keys=[redis_prefix + "s"], args=[3], client=plain) == 5
        assert await client.register_script("return 7")() == 7  # no keys, no args
    finally:
        await plain.aclose()


async def test_a_cancelled_caller_leaves_the_others_in_its_batch_answered(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    script = client.register_script(INCR)
    await script(keys=[redis_prefix + "warm"], args=[0])
    first = asyncio.ensure_future(script(keys=[redis_prefix + "c"], args=[1]))
    second = asyncio.ensure_future(script(keys=[redis_prefix + "c"], args=[10]))
    await asyncio.sleep(0)  # both are queued in this turn
    first.cancel()
    assert await second in (10, 11)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_gets_travel_with_the_script_calls_of_their_turn(
    client: PipelinedRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await client.set(redis_prefix + "cached", b"\x00answer\n")  # SET: through redis-py
    script = client.register_script(INCR)
    await script(keys=[redis_prefix + "warm"], args=[0])
    sizes = count_pipelines(client, monkeypatch)

    async def get(key: str | bytes) -> Any:  # a task, as the script call is
        return await client.get(key)

    replies = await asyncio.gather(
        get(redis_prefix + "cached"),
        script(keys=[redis_prefix + "n"], args=[2]),
        get(redis_prefix + "missing"),
        get((redis_prefix + "cached").encode()),
    )
    assert sizes == [4]
    assert replies == [b"\x00answer\n", 2, None, b"\x00answer\n"]
    await client.hset(redis_prefix + "h", "f", "v")
    with pytest.raises(redis_errors.ResponseError):  # a GET of a hash: its own error
        await client.get(redis_prefix + "h")


async def test_other_commands_are_not_batched(
    client: PipelinedRedis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_pipelines(client, monkeypatch)
    await client.set(redis_prefix + "plain", b"v")
    assert await client.exists(redis_prefix + "plain") == 1
    assert await client.delete(redis_prefix + "plain") == 1
    assert sizes == []
    async with client.pipeline(transaction=True) as pipe:
        script = client.register_script(INCR)
        await script(keys=[redis_prefix + "t"], args=[1], client=pipe)
        assert await pipe.execute() == [1]


async def test_an_unreachable_redis_fails_every_caller_as_unavailable(unused_port: int) -> None:
    client = PipelinedRedis.from_url(f"redis://127.0.0.1:{unused_port}/0")
    store = RedisCounterStore(client, "fgtest:down:")
    results = await asyncio.gather(
        *(store.rate_limit(f"r{i}", 1, 1) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, CounterStoreUnavailable) for r in results), results
    await client.aclose()


async def test_a_plain_client_and_the_pipelined_one_agree(
    client: PipelinedRedis, redis_url: str, redis_prefix: str
) -> None:
    plain = aioredis.from_url(redis_url)
    try:
        script_a = client.register_script(INCR)
        script_b = plain.register_script(INCR)
        for i in range(1, 6):
            a = await script_a(keys=[redis_prefix + "same"], args=[i])
            b = await script_b(keys=[redis_prefix + "same"], args=[i])
            assert b == a + i
    finally:
        await plain.aclose()


async def test_the_batches_connection_is_opened_again_after_redis_drops_it(
    client: PipelinedRedis, redis_prefix: str
) -> None:
    script = client.register_script(INCR)
    assert await script(keys=[redis_prefix + "n"], args=[1]) == 1
    (lean_id,) = await client._round_trip([("CLIENT", "ID")])  # the batches' connection
    await client.execute_command("CLIENT", "KILL", "ID", lean_id)
    await asyncio.sleep(0.05)
    try:
        value = await script(keys=[redis_prefix + "n"], args=[1])
    except redis_errors.ConnectionError:  # the kill raced the call: the next one reconnects
        value = await script(keys=[redis_prefix + "n"], args=[1])
    assert value == 2


async def test_the_batches_connection_uses_the_urls_database(
    redis_url: str, redis_prefix: str
) -> None:
    other = PipelinedRedis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    plain = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    try:
        script = other.register_script(INCR)
        assert await script(keys=[redis_prefix + "db"], args=[5]) == 5
        assert await plain.get(redis_prefix + "db") == b"5"
    finally:
        await plain.delete(redis_prefix + "db")
        await plain.aclose()
        await other.aclose()


def test_arguments_are_packed_as_redis_py_encodes_them() -> None:
    assert pack([("EVALSHA", "ab", 1, "k", 2.5, b"\x00", "é")]) == (
        b"*7\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"
        b"$3\r\n2.5\r\n$1\r\n\x00\r\n$2\r\n\xc3\xa9\r\n"
    )
    with pytest.raises(redis_errors.DataError):
        pack([("SET", "k", True)])
    with pytest.raises(redis_errors.DataError):
        pack_one(("SET", "k", None))
    big = 2**70
    assert pack_one(("SET", "k", big, 0.1 + 0.2, -0.0)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%d\r\n$19\r\n0.30000000000000004\r\n"
        b"$4\r\n-0.0\r\n" % (len(str(big)), big)
    )
