"""Rate limits, budgets and moderation through the running gateway, with real concurrency:
many requests at once, and exactly as many pass as the limit allows."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import aiohttp

from faregate.auth.service import KeyService
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import ADMIN_KEY, start_gateway

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


async def test_a_tpm_limit_admits_exactly_the_requests_whose_estimates_fit(
    tmp_path: Path, mock: MockServer
) -> None:
    # Slow answers: every request is checked before any finishes and trues its tokens up.
    mock.config.deployments["openai"] = MockBehaviour(latency=0.3)
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock)
    try:
        keys = KeyService(gw.services.engine, ADMIN_KEY)
        probe, _ = await keys.create_key(
            name="probe", customer_external_id="acme", settings={"limits": {"tpm": 100_000}}
        )
        status, headers, _ = await _chat(gw.url, probe, CHAT)
        assert status == 200
        estimate = 100_000 - int(headers["x-ratelimit-remaining-tokens"])  # prompt + max_tokens
        limit = 5 * estimate + estimate // 2  # room for five estimates, not six
        key, _ = await keys.create_key(
            name="tpm", customer_external_id="acme", settings={"limits": {"tpm": limit}}
        )
        results = await asyncio.gather(*(_chat(gw.url, key, CHAT) for _ in range(20)))
        statuses = [r[0] for r in results]
        assert (statuses.count(200), statuses.count(429)) == (5, 15)
        refused = [r for r in results if r[0] == 429]
        assert {r[2]["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
        assert {r[1]["x-ratelimit-limit-tokens"] for r in refused} == {str(limit)}
        assert all(int(r[1]["Retry-After"]) >= 1 for r in refused)
        assert mock.stats.requests_for(deployment="openai") == 1 + 5
    finally:
        await gw.runner.cleanup()


async def test_a_concurrency_limit_admits_exactly_that_many_requests_at_once(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(latency=0.3)
    rule = {"id": "c", "scope": "team", "match": "research", "max_concurrent": 3}
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"rate_limits": {"rules": [rule]}},
    )
    try:
        results = await asyncio.gather(*(_chat(gw.url, gw.key, CHAT) for _ in range(12)))
        statuses = [r[0] for r in results]
        assert (statuses.count(200), statuses.count(429)) == (3, 9)
        refused = [r for r in results if r[0] == 429]
        assert {r[2]["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
        assert {(r[1]["Retry-After"], r[1]["retry-after-ms"]) for r in refused} == {("1", "1000")}
        # The slots are freed when the requests end: the next wave is admitted again.
        again = await asyncio.gather(*(_chat(gw.url, gw.key, CHAT) for _ in range(3)))
        assert [r[0] for r in again] == [200, 200, 200]
        assert mock.stats.requests_for(deployment="openai") == 6
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
