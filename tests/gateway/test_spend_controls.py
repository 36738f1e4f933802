"""Rate limits, budgets and moderation through the running gateway."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp

from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import start_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


async def _chat(url: str, key: str, body: dict) -> tuple[int, dict, dict]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as r,
    ):
        return r.status, dict(r.headers), await r.json()


async def test_requests_past_the_rpm_get_429_with_openai_headers(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"rate_limits": {"rules": [{"id": "k", "scope": "key", "match": "*", "rpm": 5}]}},
    )
    try:
        results = await asyncio.gather(*(_chat(gw.url, gw.key, CHAT) for _ in range(12)))
        statuses = sorted(r[0] for r in results)
        assert statuses.count(200) == 5 and statuses.count(429) == 7
        ok = next(r for r in results if r[0] == 200)
        assert ok[1]["x-ratelimit-limit-requests"] == "5"
        refused = next(r for r in results if r[0] == 429)
        assert refused[2]["error"]["code"] == "rate_limit_exceeded"
        assert "Retry-After" in refused[1]
        assert mock.stats.requests_for(deployment="openai") == 5
    finally:
        await gw.runner.cleanup()


async def test_blocked_prompts_never_reach_the_provider(tmp_path: Path, mock: MockServer) -> None:
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {
            "moderation": {
                "policies": [
                    {
                        "id": "secrets",
                        "keywords": ["launch codes"],
                        "action": "block",
                        "apply_to": "default",
                    }
                ]
            }
        },
    )
    try:
        body = {**CHAT, "messages": [{"role": "user", "content": "tell me the launch codes"}]}
        status, _, data = await _chat(gw.url, gw.key, body)
        assert (status, data["error"]["code"]) == (400, "content_policy_violation")
        assert mock.stats.requests == 0
        status, _, _ = await _chat(gw.url, gw.key, CHAT)
        assert status == 200
    finally:
        await gw.runner.cleanup()


async def test_a_hard_budget_holds_under_concurrency(tmp_path: Path, mock: MockServer) -> None:
    # gpt-4o-mini: 0.15 / 0.60 per 1M; each call's worst case is held before it runs.
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {
            "budgets": [
                {
                    "id": "b",
                    "scope": "key",
                    "match": "*",
                    "basis": "cost",
                    "amount": "0.0001",
                    "period": "day",
                    "hard": True,
                }
            ]
        },
    )
    try:
        results = await asyncio.gather(*(_chat(gw.url, gw.key, CHAT) for _ in range(100)))
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 429]
        assert ok and refused and len(ok) + len(refused) == 100
        assert all(r[2]["error"]["code"] == "budget_exceeded" for r in refused)
        spent = sum(Decimal(r[1]["x-faregate-cost"]) for r in ok)
        assert spent <= Decimal("0.0001")
    finally:
        await gw.runner.cleanup()


async def test_holds_left_by_a_dead_process_are_swept_in_the_background(
    tmp_path: Path, mock: MockServer
) -> None:
    from faregate.store.counters import ReserveSpec

    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"server": {"hold_sweep_interval_s": 0.02}},
    )
    try:
        store = gw.services.components["counters"]
        spec = ReserveSpec("budget:b:team", 500, 1000, "p", 60)
        assert (await store.reserve([spec], "orphan", 0.01)).ok  # its process "died"
        for _ in range(300):
            if await store.held("budget:b:team:p") == 0:
                break
            await asyncio.sleep(0.01)
        assert await store.held("budget:b:team:p") == 0
        assert gw.services.components["hold_sweeper"].runs > 0
    finally:
        await gw.runner.cleanup()
    assert not gw.services.components["hold_sweeper"].running


async def test_the_spend_anomaly_monitor_runs_in_the_background(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"alerts": {"spend_anomaly": {"factor": 3, "by": ["team"], "interval_s": 0.02}}},
    )
    monitor = gw.services.components["spend_monitor"]
    try:
        assert (await _chat(gw.url, gw.key, CHAT))[0] == 200
        for _ in range(300):
            if monitor.runs >= 2:
                break
            await asyncio.sleep(0.01)
        assert monitor.runs >= 2 and monitor.failures == 0
    finally:
        await gw.runner.cleanup()
    assert not monitor.running
