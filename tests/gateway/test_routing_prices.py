"""What routing and pricing decide together, through the running gateway: service tiers in
`cheapest` and in the settled cost, `tiered` rules on tags, metadata and priority, a key's
`max_price`, an alias served by a differently priced fallback, and worst-case holds that
cover fallbacks and the model's whole output limit."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.store.tables.metering import requests as requests_table
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MILLION = Decimal(10**6)


def _provider(mock_url: str, name: str) -> dict[str, str]:
    return {"wire": "openai", "base_url": f"{mock_url}/d/{name}/v1", "api_key": "k"}


def _price(model: str, input: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "xtest",
        "model": model,
        "effective_from": "2020-01-01",
        "input": input,
        "output": output,
        **extra,
    }


def _dep(id: str, price_key: str, **extra: Any) -> dict[str, Any]:
    return {"id": id, "provider": id, "model": "m", "price_key": price_key, **extra}


async def _start(tmp_path: Path, mock: MockServer, config: dict[str, Any]) -> Running:
    return await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)


async def _chat(
    s: aiohttp.ClientSession,
    gw: Running,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    key: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    auth = {"Authorization": f"Bearer {key or gw.key}", **(headers or {})}
    async with s.post(f"{gw.url}/v1/chat/completions", json=body, headers=auth) as r:
        return r.status, dict(r.headers), await r.json()


def _cost(usage: dict[str, Any], input: str, output: str) -> Decimal:
    tokens_in, tokens_out = Decimal(usage["prompt_tokens"]), Decimal(usage["completion_tokens"])
    return (tokens_in * Decimal(input) + tokens_out * Decimal(output)) / MILLION


async def _stored(gw: Running, request_id: str) -> dict[str, Any]:
    for _ in range(100):  # the usage writer inserts in batches
        async with gw.services.engine.connect() as conn:
            query = select(requests_table).where(requests_table.c.id == request_id)
            row = (await conn.execute(query)).mappings().first()
        if row is not None:
            return dict(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} was never stored")


# -- service tiers ------------------------------------------------------------------------


def _tier_config(mock_url: str, fast_tier: str | None = None) -> dict[str, Any]:
    # "fast" is cheaper at the standard rate but triples at priority; "steady" declares no
    # priority tier, so it is priced at its standard rate whatever the request asks.
    fast = _dep("fast", "fast-model", **({"tier": fast_tier} if fast_tier else {}))
    return {
        "providers": {n: _provider(mock_url, n) for n in ("fast", "steady")},
        "prices": {
            "models": [
                _price("fast-model", "1", "1", tiers={"priority": 3, "flex": "0.5"}),
                _price("steady-model", "2", "2"),
            ]
        },
        "models": [
            {
                "name": "auto",
                "strategy": "cheapest",
                "deployments": [fast, _dep("steady", "steady-model")],
            },
            {"name": "fast-only", "deployments": [fast]},
        ],
    }


BODY = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "x" * 400}]}


async def test_cheapest_prices_the_requested_service_tier(tmp_path: Path, mock: MockServer) -> None:
    gw = await _start(tmp_path, mock, _tier_config(mock.url))
    try:
        async with aiohttp.ClientSession() as s:
            served = {}
            for tier in (None, "default", "auto", "flex", "priority", "fast"):
                body = BODY if tier is None else {**BODY, "service_tier": tier}
                status, headers, _ = await _chat(s, gw, body)
                assert status == 200
                served[tier] = headers["x-faregate-deployment"]
        # ~110 tokens in, 50 out: fast $1/$1 x3 at priority = $0.00048 > steady's $0.00032.
        assert served == {
            None: "fast",
            "default": "fast",
            "auto": "fast",
            "flex": "fast",
            "priority": "steady",
            "fast": "steady",  # OpenAI's other name for priority
        }
    finally:
        await gw.runner.cleanup()


async def test_a_deployment_configured_for_priority_is_priced_so_by_cheapest(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock, _tier_config(mock.url, fast_tier="priority"))
    try:
        async with aiohttp.ClientSession() as s:
            assert (await _chat(s, gw, BODY))[1]["x-faregate-deployment"] == "steady"
            # The request's own tier wins over the deployment's.
            body = {**BODY, "service_tier": "default"}
            assert (await _chat(s, gw, body))[1]["x-faregate-deployment"] == "fast"
    finally:
        await gw.runner.cleanup()


async def test_the_settled_cost_carries_the_tier_multiplier(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock, _tier_config(mock.url))
    try:
        async with aiohttp.ClientSession() as s:
            costs = {}
            for tier in ("default", "priority", "flex"):
                body = {**BODY, "model": "fast-only", "service_tier": tier}
                status, headers, answer = await _chat(s, gw, body)
                assert status == 200
                base = _cost(answer["usage"], "1", "1")
                costs[tier] = Decimal(headers["x-faregate-cost"]) / base
                row = await _stored(gw, headers["x-faregate-request-id"])
                assert row["cost_nanos"] == int(Decimal(headers["x-faregate-cost"]) * 10**9)
        assert costs == {"default": 1, "priority": 3, "flex": Decimal("0.5")}
    finally:
        await gw.runner.cleanup()


# -- tiered rules through HTTP --------------------------------------------------------------


def _tiered_config(mock_url: str) -> dict[str, Any]:
    def one(group: str, deployment: str) -> dict[str, Any]:
        return {
            "name": group,
            "deployments": [{"id": deployment, "provider": deployment, "model": "m"}],
        }

    names = ("draft-dep", "final-dep", "rush-dep", "std-dep", "render-own")
    return {
        "providers": {n: _provider(mock_url, n) for n in names},
        "models": [
            {
                **one("render", "render-own"),
                "strategy": "tiered",
                "rules": [
                    {"match": {"priority": ["priority"]}, "group": "rush"},
                    {"match": {"tags": ["draft"]}, "group": "draft"},
                    {"match": {"metadata": {"stage": "final"}}, "group": "final"},
                ],
                "default": "standard",
            },
            one("draft", "draft-dep"),
            one("final", "final-dep"),
            one("rush", "rush-dep"),
            one("standard", "std-dep"),
        ],
    }


async def test_tiered_rules_route_by_tag_metadata_and_service_tier(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock, _tiered_config(mock.url))
    body = {"model": "render", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    asks: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({}, {}, "std-dep"),
        ({}, {"x-faregate-tags": "draft"}, "draft-dep"),
        ({"metadata": {"tags": ["draft"]}}, {}, "draft-dep"),
        ({"metadata": {"stage": "final"}}, {}, "final-dep"),
        ({"metadata": {"stage": "sketch"}}, {}, "std-dep"),
        ({"service_tier": "priority", "metadata": {"stage": "final"}}, {}, "rush-dep"),
        ({"service_tier": "fast"}, {}, "rush-dep"),
        ({"service_tier": "default"}, {"x-faregate-tags": "draft"}, "draft-dep"),
    ]
    try:
        async with aiohttp.ClientSession() as s:
            for extra, headers, expected in asks:
                status, got, _ = await _chat(s, gw, {**body, **extra}, headers)
                assert (status, got["x-faregate-deployment"]) == (200, expected), extra
        for deployment in ("draft-dep", "final-dep", "rush-dep", "std-dep"):
            assert mock.stats.requests_for(deployment=deployment) > 0
        assert mock.stats.requests_for(deployment="render-own") == 0
    finally:
        await gw.runner.cleanup()


# -- price ceilings and failover pricing ----------------------------------------------------


def _two_prices_config(mock_url: str) -> dict[str, Any]:
    return {
        "providers": {n: _provider(mock_url, n) for n in ("dear", "cheap")},
        "prices": {"models": [_price("dear-model", "4", "8"), _price("cheap-model", "1", "2")]},
        "models": [
            {
                "name": "chat",
                "aliases": ["chat-latest", "gpt-house"],
                "strategy": "priority",
                "deployments": [_dep("dear", "dear-model"), _dep("cheap", "cheap-model")],
            }
        ],
    }


async def test_a_keys_max_price_setting_leaves_out_dearer_deployments(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _start(tmp_path, mock, _two_prices_config(mock.url))
    body = {
        "model": "chat",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x" * 400}],
    }
    try:
        async with aiohttp.ClientSession() as s:

            async def key_with(ceiling: str) -> str:
                spec = {"name": ceiling, "customer": "acme", "settings": {"max_price": ceiling}}
                async with s.post(f"{gw.url}/admin/keys", json=spec, headers=ADMIN) as r:
                    assert r.status == 201, await r.text()
                    return str((await r.json())["key"])

            # ~110 in, 100 out: dear 4*110 + 8*100 = $0.00124, cheap 110 + 200 = $0.00031.
            assert (await _chat(s, gw, body))[1]["x-faregate-deployment"] == "dear"
            roomy, tight, tiny = [await key_with(c) for c in ("0.01", "0.0005", "0.0001")]
            assert (await _chat(s, gw, body, key=roomy))[1]["x-faregate-deployment"] == "dear"
            status, headers, _ = await _chat(s, gw, body, key=tight)
            assert (status, headers["x-faregate-deployment"]) == (200, "cheap")
            assert Decimal(headers["x-faregate-cost"]) <= Decimal("0.0005")
            # The request's header can lower the key's ceiling, never raise it.
            lower = {"x-faregate-max-price": "0.0001"}
            status, _, error = await _chat(s, gw, body, lower, key=roomy)
            assert (status, error["error"]["code"]) == (400, "max_price_exceeded")
            higher = {"x-faregate-max-price": "1"}
            status, _, error = await _chat(s, gw, body, higher, key=tiny)
            assert (status, error["error"]["code"]) == (400, "max_price_exceeded")
        assert mock.stats.requests_for(deployment="cheap") == 1
    finally:
        await gw.runner.cleanup()


async def test_an_alias_that_fails_over_is_priced_by_the_deployment_that_served_it(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["dear"] = MockBehaviour(error_rate=1.0)
    gw = await _start(tmp_path, mock, _two_prices_config(mock.url))
    body = {
        "model": "gpt-house",
        "max_tokens": 30,
        "messages": [{"role": "user", "content": "hey"}],
    }
    try:
        async with aiohttp.ClientSession() as s:
            status, headers, answer = await _chat(s, gw, body)
        assert status == 200
        assert (headers["x-faregate-deployment"], headers["x-faregate-attempts"]) == ("cheap", "2")
        cost = _cost(answer["usage"], "1", "2")
        assert Decimal(headers["x-faregate-cost"]) == cost
        assert cost != _cost(answer["usage"], "4", "8")
        row = await _stored(gw, headers["x-faregate-request-id"])
        assert row["model_requested"] == "gpt-house"
        assert (row["deployment"], row["attempts"]) == ("cheap", 2)
        assert row["cost_nanos"] == int(cost * 10**9)
    finally:
        await gw.runner.cleanup()


# -- worst-case holds -------------------------------------------------------------------------


def _budget(amount: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "b",
            "scope": "customer",
            "match": "acme",
            "basis": "cost",
            "amount": amount,
            "period": "day",
            "hard": True,
        }
    ]


def _may_use(error: dict[str, Any]) -> Decimal:
    found = re.search(r"may use up to ([0-9]+(?:\.[0-9]+)?)", error["error"]["message"])
    assert found, error
    return Decimal(found.group(1))


async def test_a_budget_holds_the_price_of_the_dearer_fallback_group(
    tmp_path: Path, mock: MockServer
) -> None:
    # The cheap primary always fails; the dear fallback group answers with every token
    # max_tokens allows. Holding only the primary's worst case would let a fourth request
    # through and spend past the budget.
    mock.config.deployments["cheap"] = MockBehaviour(error_rate=1.0)
    mock.config.deployments["dear"] = MockBehaviour(output_tokens=100)
    config = {
        "providers": {n: _provider(mock.url, n) for n in ("dear", "cheap")},
        "prices": {"models": [_price("dear-model", "500", "500"), _price("cheap-model", "1", "1")]},
        "models": [
            {"name": "chat", "deployments": [_dep("cheap", "cheap-model")], "fallbacks": ["big"]},
            {"name": "big", "deployments": [_dep("dear", "dear-model")]},
        ],
        "budgets": _budget("0.2"),
    }
    gw = await _start(tmp_path, mock, config)
    body = {"model": "chat", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            results = [await _chat(s, gw, body) for _ in range(5)]
        served = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] != 200]
        assert {r[1]["x-faregate-deployment"] for r in served} == {"dear"}
        # Each answer costs ~(5 + 100) x $500 / 1M = $0.0525; each hold ~$0.054.
        spent = sum(Decimal(r[1]["x-faregate-cost"]) for r in served)
        assert len(served) == 3 and spent <= Decimal("0.2")
        assert {r[0] for r in refused} == {429}
        held = _may_use(refused[0][2])
        assert held >= max(Decimal(r[1]["x-faregate-cost"]) for r in served)
    finally:
        await gw.runner.cleanup()


async def test_without_max_tokens_the_hold_covers_the_models_whole_output_limit(
    tmp_path: Path, mock: MockServer
) -> None:
    # gpt-4o-mini may write 16,384 tokens; the mock writes 6,000 when nothing caps it.
    mock.config.deployments["openai"] = MockBehaviour(output_tokens=6000)
    gw = await _start(tmp_path, mock, {"budgets": _budget("0.01")})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            status, headers, answer = await _chat(s, gw, body)
            assert status == 200 and answer["usage"]["completion_tokens"] == 6000
            cost = Decimal(headers["x-faregate-cost"])
            assert cost == _cost(answer["usage"], "0.15", "0.60")
            status, _, error = await _chat(s, gw, body)
        # $0.0036 spent; the next request may cost up to 16,384 x $0.60 / 1M > what is left.
        assert status == 429 and error["error"]["code"]
        held = _may_use(error)
        assert held >= Decimal(16_384) * Decimal("0.60") / MILLION
        assert held >= cost
    finally:
        await gw.runner.cleanup()


async def test_an_adapter_that_always_sends_max_tokens_bounds_the_hold(
    tmp_path: Path, mock: MockServer
) -> None:
    # The Anthropic adapter asks for max_tokens 4,096 when the client sets none, so the
    # provider cannot write more, whatever the model's 64,000-token limit.
    mock.config.deployments["anthropic"] = MockBehaviour(output_tokens=5000)
    budget = _budget("0.05")[0] | {"scope": "tag", "match": "capped"}
    gw = await _start(tmp_path, mock, {"budgets": [budget]})
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            status, headers, answer = await _chat(s, gw, body)
            assert status == 200 and answer["usage"]["completion_tokens"] == 4096
            cost = Decimal(headers["x-faregate-cost"])
            status, _, error = await _chat(s, gw, body, {"x-faregate-tags": "capped"})
        assert status == 429
        held = _may_use(error)
        # The input bound (3 of priming, 4 of framing, 2 bytes of text) at $3 and 4,096
        # output tokens at $15 per 1M.
        assert held == (9 * Decimal(3) + 4096 * Decimal(15)) / MILLION
        assert held >= cost
    finally:
        await gw.runner.cleanup()


async def test_a_request_that_asks_for_prompt_caching_is_held_at_the_cache_write_rate(
    tmp_path: Path, mock: MockServer
) -> None:
    # Anthropic bills input written to its prompt cache at 1.25x input ($3.75 a million on
    # claude-sonnet-4): a request that marks something for the cache may be billed so for
    # all of its input, one that marks nothing cannot.
    budget = _budget("0.000001")[0] | {"scope": "tag", "match": "tiny"}
    gw = await _start(tmp_path, mock, {"budgets": [budget]})
    part = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    cached = {
        "model": "claude-sonnet-4",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [part]}],
    }
    plain = {**cached, "messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            held = []
            for body in (cached, plain):
                status, _, error = await _chat(s, gw, body, {"x-faregate-tags": "tiny"})
                assert status == 429, error
                held.append(_may_use(error))
        # The input bound (3 of priming, 4 of framing, 2 bytes of text) and 10 output tokens
        # at $15 per 1M.
        assert held == [
            (9 * Decimal("3.75") + 10 * Decimal(15)) / MILLION,
            (9 * Decimal(3) + 10 * Decimal(15)) / MILLION,
        ]
    finally:
        await gw.runner.cleanup()


async def test_a_request_that_asks_for_an_hour_of_caching_is_held_at_the_one_hour_rate(
    tmp_path: Path, mock: MockServer
) -> None:
    # One-hour cache writes cost 2x input ($6 a million on claude-sonnet-4), not the
    # 5-minute 1.25x: a breakpoint with "ttl": "1h" may be billed so for all of its input.
    budget = _budget("0.000001")[0] | {"scope": "tag", "match": "tiny"}
    gw = await _start(tmp_path, mock, {"budgets": [budget]})
    held = []
    try:
        async with aiohttp.ClientSession() as s:
            for mark in ({"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral"}):
                tool = {"type": "function", "function": {"name": "f"}, "cache_control": mark}
                body = {
                    "model": "claude-sonnet-4",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [tool],
                }
                status, _, error = await _chat(s, gw, body, {"x-faregate-tags": "tiny"})
                assert status == 429, error
                # The input bound at the write rate, after 10 output tokens at $15 per 1M.
                held.append(_may_use(error) * MILLION - 10 * Decimal(15))
        # Whole input tokens at $6 and at $3.75 (the "ttl" text adds a few tokens).
        hour_tokens, five_minute_tokens = held[0] / 6, held[1] / Decimal("3.75")
        assert hour_tokens == int(hour_tokens) and five_minute_tokens == int(five_minute_tokens)
        assert 0 <= hour_tokens - five_minute_tokens < 20
    finally:
        await gw.runner.cleanup()
