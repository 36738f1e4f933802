"""Which deployment serves a request, through the running gateway: `cheapest` prices this
request, `ab_split` splits by key and reports per arm (API, live statistics and CLI)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from faregate.cli import main as cli_main
from faregate.mockprovider.server import MockServer
from faregate.routing import RouteRequest
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _provider(mock_url: str, name: str) -> dict[str, str]:
    return {"wire": "openai", "base_url": f"{mock_url}/d/{name}/v1", "api_key": "k"}


def _crossing_config(mock_url: str) -> dict[str, Any]:
    # Cheap input / dear output against the opposite: the prompt's size decides.
    return {
        "providers": {n: _provider(mock_url, n) for n in ("cheap-in", "cheap-out")},
        "prices": {
            "models": [
                {
                    "provider": "xtest",
                    "model": "cheap-in-model",
                    "effective_from": "2020-01-01",
                    "input": 0.1,
                    "output": 2,
                },
                {
                    "provider": "xtest",
                    "model": "cheap-out-model",
                    "effective_from": "2020-01-01",
                    "input": 2,
                    "output": 0.1,
                },
            ]
        },
        "models": [
            {
                "name": "auto",
                "strategy": "cheapest",
                "deployments": [
                    {
                        "id": "cheap-in",
                        "provider": "cheap-in",
                        "model": "m",
                        "price_key": "cheap-in-model",
                    },
                    {
                        "id": "cheap-out",
                        "provider": "cheap-out",
                        "model": "m",
                        "price_key": "cheap-out-model",
                    },
                ],
            }
        ],
    }


async def test_cheapest_picks_by_the_size_of_this_prompt_when_prices_cross(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _crossing_config(mock.url)
    )
    small = "x" * (4 * 96)  # ~100 prompt tokens
    large = "x" * (4 * 99_996)  # ~100,000 prompt tokens
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:
            served = {}
            for name, text in (("small", small), ("large", large)):
                body = {
                    "model": "auto",
                    "max_tokens": 200,
                    "messages": [{"role": "user", "content": text}],
                }
                async with s.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
                    served[name] = r.headers["x-faregate-deployment"]
                    prompt_tokens = (await r.json())["usage"]["prompt_tokens"]
                    assert abs(prompt_tokens - len(text) // 4) < 10
        # 100 in + 200 out: 0.1*100 + 2*200 = 410 vs 2*100 + 0.1*200 = 220 -> cheap output.
        # 100,000 in: 10,000 + 400 vs 200,000 + 20 -> cheap input.
        assert served == {"small": "cheap-out", "large": "cheap-in"}
        assert mock.stats.requests_for(deployment="cheap-out") == 1
        assert mock.stats.requests_for(deployment="cheap-in") == 1
    finally:
        await gw.runner.cleanup()


def _ab_config(mock_url: str) -> dict[str, Any]:
    return {
        "providers": {n: _provider(mock_url, n) for n in ("ab-a", "ab-b")},
        "prices": {
            "models": [
                {
                    "provider": "xtest",
                    "model": "ab-model",
                    "effective_from": "2020-01-01",
                    "input": 1,
                    "output": 4,
                },
            ]
        },
        "models": [
            {
                "name": "ab",
                "strategy": "ab_split",
                "experiment": "exp-1",
                "sticky": "key",
                "arms": [
                    {"deployment": "ab-a", "percent": 30, "name": "a"},
                    {"deployment": "ab-b", "percent": 70, "name": "b"},
                ],
                "deployments": [
                    {"id": "ab-a", "provider": "ab-a", "model": "m", "price_key": "ab-model"},
                    {"id": "ab-b", "provider": "ab-b", "model": "m", "price_key": "ab-model"},
                ],
            }
        ],
    }


@pytest.fixture
async def ab_gateway(tmp_path: Path, mock: MockServer) -> Any:
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _ab_config(mock.url)
    )
    yield gw
    await gw.runner.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
async def ab_gateway_on(request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer) -> Any:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    gw = await start_gateway(tmp_path, url, mock, _ab_config(mock.url))
    yield gw
    await gw.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


def test_ten_thousand_keys_split_within_two_points_of_target_and_stay_put(
    ab_gateway: Running,
) -> None:
    router = ab_gateway.services.router
    group = router.resolve("ab")

    def arm(key: str) -> str:
        return str(router.plan(group, RouteRequest(key_id=key))[0].id)

    first = {f"key-{i}": arm(f"key-{i}") for i in range(10_000)}
    share_a = sum(d == "ab-a" for d in first.values()) / len(first)
    assert abs(share_a - 0.30) <= 0.02
    assert all(arm(key) == deployment for key, deployment in list(first.items())[:2_000])


async def _new_key(s: aiohttp.ClientSession, gw: Running, name: str) -> str:
    return (await _new_key_with_id(s, gw, name))[0]


async def _new_key_with_id(s: aiohttp.ClientSession, gw: Running, name: str) -> tuple[str, str]:
    async with s.post(
        f"{gw.url}/admin/keys", json={"name": name, "customer": "acme"}, headers=ADMIN
    ) as r:
        assert r.status == 201
        created = await r.json()
        return str(created["key"]), str(created["api_key"]["id"])


async def _keys_on_both_arms(s: aiohttp.ClientSession, gw: Running, count: int) -> list[str]:
    """`count` new keys of which at least two land on each arm (a random 12 all land on the
    70% arm 1.4% of the time); the arm of a key is read from the router, as routing reads it."""
    router = gw.services.router
    group = router.resolve("ab")
    by_arm: dict[str, list[str]] = {"ab-a": [], "ab-b": []}
    for i in range(200):
        key, key_id = await _new_key_with_id(s, gw, f"k{i}")
        arm = str(router.plan(group, RouteRequest(key_id=key_id))[0].id)
        by_arm[arm].append(key)
        if (
            min(len(keys) for keys in by_arm.values()) >= 2
            and sum(map(len, by_arm.values())) >= count
        ):
            break
    keys = by_arm["ab-a"][:2] + by_arm["ab-b"][:2]
    rest = [k for ks in by_arm.values() for k in ks if k not in keys]
    return keys + rest[: count - len(keys)]


async def _report(s: aiohttp.ClientSession, gw: Running, query: str = "") -> Any:
    async with s.get(f"{gw.url}/api/v1/experiments/exp-1{query}", headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_each_key_sticks_to_its_arm_and_the_report_counts_every_request(
    ab_gateway_on: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = ab_gateway_on
    body = {"model": "ab", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
    async with aiohttp.ClientSession() as s:
        keys = await _keys_on_both_arms(s, gw, 12)
        served: dict[str, set[str]] = {}
        for key in keys:
            for _ in range(4):
                async with s.post(
                    f"{gw.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                ) as r:
                    assert r.status == 200
                    served.setdefault(key, set()).add(r.headers["x-faregate-deployment"])
        assert all(len(deployments) == 1 for deployments in served.values())
        assert {d for ds in served.values() for d in ds} == {"ab-a", "ab-b"}
        per_arm = {"a": 0, "b": 0}
        for deployments in served.values():
            per_arm["a" if deployments == {"ab-a"} else "b"] += 4

        live = await _report(s, gw, "?source=live")
        assert {row["arm"]: row["requests"] for row in live["arms"]} == per_arm
        for _ in range(100):  # stored records arrive through the batched writer
            stored = await _report(s, gw)
            if sum(row["requests"] for row in stored["arms"]) == 48:
                break
            await asyncio.sleep(0.05)
        assert {row["arm"]: row["requests"] for row in stored["arms"]} == per_arm
        for row in stored["arms"]:
            if not row["requests"]:
                continue
            # 5 output tokens and the mock's deterministic prompt count, at $1 / $4 per 1M.
            assert row["errors"] == 0 and row["error_rate"] == 0.0
            assert row["output_tokens"] == 5 * row["requests"]
            expected = (Decimal(row["input_tokens"]) + 4 * Decimal(row["output_tokens"])) / 10**6
            assert Decimal(row["cost"]) == expected
            assert row["latency_p50_ms"] is not None
            assert row["latency_p95_ms"] >= row["latency_p50_ms"]
            live_row = next(r for r in live["arms"] if r["arm"] == row["arm"])
            assert Decimal(live_row["cost"]) == expected
            assert live_row["output_tokens"] == row["output_tokens"]
        assert stored["configured"] is True and stored["models"] == ["ab"]

        async with s.get(f"{gw.url}/api/v1/experiments", headers=ADMIN) as r:
            listed = (await r.json())["experiments"]
        assert listed[0]["experiment"] == "exp-1" and listed[0]["stored_requests"] == 48
        async with s.get(f"{gw.url}/api/v1/experiments/nope", headers=ADMIN) as r:
            assert r.status == 404
        async with s.get(
            f"{gw.url}/api/v1/experiments/exp-1", headers={"Authorization": f"Bearer {keys[0]}"}
        ) as r:
            assert r.status == 403

    code = await asyncio.to_thread(
        cli_main,
        ["experiments", "show", "exp-1", "--database-url", gw.settings.database_url],
    )
    assert code == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert {row["arm"]: row["requests"] for row in printed["arms"]} == per_arm
    assert printed["arms"] == [
        {k: v for k, v in row.items()} for row in stored["arms"] if row["requests"]
    ]


async def test_the_stored_report_covers_every_replica_and_the_live_one_its_own_process(
    tmp_path: Path, mock: MockServer, pg_url: str
) -> None:
    first = await start_gateway(tmp_path / "1", pg_url, mock, _ab_config(mock.url))
    second = await start_gateway(tmp_path / "2", pg_url, mock, _ab_config(mock.url), key_for=first)
    body = {"model": "ab", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            keys = [await _new_key(s, first, f"k{i}") for i in range(6)]
            for gw, count in ((first, 10), (second, 14)):
                for i in range(count):
                    async with s.post(
                        f"{gw.url}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {keys[i % len(keys)]}"},
                    ) as r:
                        assert r.status == 200
            for gw, own in ((first, 10), (second, 14)):
                live = await _report(s, gw, "?source=live")
                assert sum(row["requests"] for row in live["arms"]) == own
            for _ in range(100):
                stored = await _report(s, first)
                if sum(row["requests"] for row in stored["arms"]) == 24:
                    break
                await asyncio.sleep(0.05)
            assert sum(row["requests"] for row in stored["arms"]) == 24
            assert await _report(s, second) == stored
    finally:
        await second.runner.cleanup()
        await first.runner.cleanup()


async def test_a_request_max_price_leaves_out_deployments_that_would_cost_more(
    tmp_path: Path, mock: MockServer
) -> None:
    config = _crossing_config(mock.url)
    config["models"][0]["strategy"] = "priority"  # cheap-in (dearer here) is tried first
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    body = {
        "model": "auto",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "x" * 384}],
    }
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:

            async def ask(ceiling: str | None) -> tuple[int, str, Any]:
                headers = {"x-faregate-max-price": ceiling} if ceiling else {}
                async with s.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers) as r:
                    return r.status, r.headers.get("x-faregate-deployment", ""), await r.json()

            # ~100 prompt tokens, 200 expected out: cheap-in $0.00041, cheap-out $0.00022.
            assert (await ask(None))[:2] == (200, "cheap-in")
            assert (await ask("0.0003"))[:2] == (200, "cheap-out")
            status, _, error = await ask("0.0001")
            assert status == 400 and error["error"]["code"] == "max_price_exceeded"
            status, _, error = await ask("cheap")
            assert status == 400 and error["error"]["param"] == "max_price"
        assert mock.stats.requests_for(deployment="cheap-out") == 1
    finally:
        await gw.runner.cleanup()
