"""Two gateway processes on one PostgreSQL and one Redis: rate limits (rpm per key, team, tag
and model; tpm per customer and key; concurrency per team), budgets on cost and on price (per customer, team, key, model and tag), budget
alerts and the response cache hold across them as they do in one process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from sqlalchemy import func, select

from faregate.auth.principal import Principal
from faregate.config import load_settings
from faregate.gateway.call import Call
from faregate.gateway.pricing import CatalogPricer
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.money import from_nanos
from faregate.pricing import catalog_from_section
from faregate.store.db import create_engine
from faregate.store.tables.metering import requests
from faregate.tokens import count_chat_input_tokens
from faregate.webhooks import verify
from tests.conftest import create_pg_database, drop_pg_database, free_port
from tests.gateway.conftest import gateway_config, sse_comment, sse_events, start_gateway
from tests.gateway.processes import Replica, prepare_database, start_replicas, stop_replicas

CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
HMAC_KEY = "test-hmac-key"


async def _post(
    url: str, key: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


@pytest.fixture
async def pg() -> AsyncIterator[str]:
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


@dataclass(frozen=True)
class RpmCase:
    rule: dict[str, Any]  # the rule without its rpm
    limit: int
    headers: dict[str, str] = field(default_factory=dict)  # what puts a request under it
    # Traffic the rule must not hold back (another tag, another model's own counter).
    control: tuple[dict[str, Any], dict[str, str]] | None = None


RPM_CASES = [
    pytest.param(RpmCase({"id": "k", "scope": "key", "match": "*"}, 200), id="key"),
    pytest.param(RpmCase({"id": "tm", "scope": "team", "match": ["research"]}, 60), id="team"),
    pytest.param(
        RpmCase(
            {"id": "t", "scope": "tag", "match": ["batch"]},
            60,
            {"X-Faregate-Tags": "batch"},
            (CHAT, {"X-Faregate-Tags": "interactive"}),
        ),
        id="tag",
    ),
    pytest.param(
        RpmCase(
            {"id": "m", "scope": "model", "match": "*"},
            60,
            control=({**CHAT, "model": "claude-sonnet-4"}, {}),
        ),
        id="model",
    ),
]
CONTROL_PER_REPLICA = 10


@pytest.mark.parametrize("case", RPM_CASES)
async def test_an_rpm_limit_holds_within_one_percent_across_two_processes(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str, case: RpmCase
) -> None:
    limit = case.limit
    key = await prepare_database(pg)
    extra = {
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "rate_limits": {"rules": [{**case.rule, "rpm": limit}]},
    }
    controls = [case.control] * CONTROL_PER_REPLICA if case.control else []
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        started = time.monotonic()
        limited = [
            _post(r.url, key, CHAT, case.headers) for _ in range(limit * 3 // 4) for r in replicas
        ]
        free = [_post(r.url, key, body, headers) for body, headers in controls for r in replicas]
        results = await asyncio.gather(*limited, *free)
        elapsed = time.monotonic() - started
    finally:
        await stop_replicas(replicas)
    results, control_results = results[: len(limited)], results[len(limited) :]
    admitted = sum(1 for status, _, _ in results if status == 200)
    refused = [h for status, h, _ in results if status == 429]
    assert admitted + len(refused) == len(results)
    # GCRA refills `limit` per minute: what the limit allows in this run is the burst plus
    # the refill over the run's duration; the two processes together stay within 1% of it.
    allowed = limit + elapsed * limit / 60
    assert limit <= admitted <= allowed * 1.01, (admitted, allowed)
    assert [status for status, _, _ in control_results] == [200] * len(free)
    assert mock.stats.requests == admitted + len(free)
    assert all(h["x-ratelimit-limit-requests"] == str(limit) for h in refused)
    assert {h.get("x-ratelimit-remaining-requests") for h in refused} == {"0"}


@pytest.mark.parametrize("scope", ["customer", "key"])
async def test_a_tpm_limit_holds_within_one_percent_across_two_processes(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str, scope: str
) -> None:
    limit = 1300  # input + output tokens per minute; each call uses about 13
    key = await prepare_database(pg)
    extra = {
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "rate_limits": {"rules": [{"id": "c", "scope": scope, "match": "*", "tpm": limit}]},
    }
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(_post(r.url, key, CHAT) for _ in range(75) for r in replicas)
        )
        elapsed = time.monotonic() - started
    finally:
        await stop_replicas(replicas)
    used = [orjson.loads(b)["usage"]["total_tokens"] for status, _, b in results if status == 200]
    refused = [h for status, h, _ in results if status == 429]
    assert used and refused and len(used) + len(refused) == len(results)
    # Each call reserves its estimate (prompt + max_tokens) and is trued up to the
    # provider's report when it ends. Admission stops once the estimates fill the limit;
    # the tokens used stay within 1% of the limit plus its refill over the run.
    estimate = count_chat_input_tokens(CHAT) + CHAT["max_tokens"]
    allowed = limit + elapsed * limit / 60
    assert len(used) * estimate >= limit - estimate
    assert sum(used) <= allowed * 1.01, (sum(used), allowed)
    assert {h["x-ratelimit-limit-tokens"] for h in refused} == {str(limit)}
    assert mock.stats.requests == len(used)


async def test_a_concurrency_limit_holds_across_two_processes(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str
) -> None:
    key = await prepare_database(pg)
    mock.config.deployments["openai"] = MockBehaviour(latency=2.0)
    extra = {
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "rate_limits": {"rules": [{"id": "c", "scope": "team", "match": "*", "max_concurrent": 3}]},
    }
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        results = await asyncio.gather(
            *(_post(r.url, key, CHAT) for _ in range(5) for r in replicas)
        )
    finally:
        await stop_replicas(replicas)
    statuses = [status for status, _, _ in results]
    # All ten arrive while the first three are still upstream (each takes 2 s).
    assert statuses.count(200) == 3 and statuses.count(429) == 7


class Receiver:
    """A webhook endpoint on loopback that keeps what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()

    def alerts(self) -> list[dict[str, Any]]:
        out = []
        for headers, body in self.received:
            assert verify(HMAC_KEY, body, headers["X-Lago-Signature"])
            data = orjson.loads(body)
            if data["webhook_type"] == "alert.triggered":
                out.append(data["alert"])
        return out

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        for _ in range(600):
            if len(self.alerts()) >= count:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a duplicate, if any, would arrive now
        return self.alerts()


# A priced model where one call's worst case is about $0.03: 100 of them overrun $1.00.
PRICEY = {
    "prices": {
        "models": [
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "effective_from": "2025-01-01",
                "input": 1,
                "output": 30,
            }
        ]
    }
}
PRICEY_CHAT = {**CHAT, "max_tokens": 1000}
DOLLAR_BUDGET = {
    "id": "dollar",
    "scope": "customer",
    "match": "acme",
    "basis": "cost",
    "amount": "1.00",
    "period": "day",
    "timezone": "Europe/Berlin",
    "thresholds": [0.5, 0.8, 1.0],
    "hard": True,
}


def _estimated(markup: Decimal = Decimal(1)) -> Call:
    settings = load_settings(env={}, overrides=gateway_config("http://127.0.0.1:9", PRICEY))
    pricer = CatalogPricer(catalog_from_section(settings.section("prices")), markup=markup)
    call = Call("r", Principal("k", "p"), "chat", "gpt-4o-mini", dict(PRICEY_CHAT))
    call.group = settings.models["gpt-4o-mini"]
    pricer.estimate_call(call)
    assert call.est_cost is not None and call.est_cost > Decimal("0.02")
    return call


def _one_request_estimate() -> Decimal:
    estimate = _estimated().est_cost
    assert estimate is not None
    return estimate


async def _total_spend(
    database_url: str, column: Any = requests.c.cost_nanos
) -> tuple[Decimal, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(func.coalesce(func.sum(column), 0), func.count()).where(
                        requests.c.status == 200
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return from_nanos(int(row[0])), int(row[1])


def _check_budget_run(
    results: list[tuple[int, dict[str, str], bytes]], spent: Decimal, served: int
) -> None:
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert ok and refused and len(ok) + len(refused) == 100 == len(results)
    assert all(orjson.loads(b)["error"]["code"] == "budget_exceeded" for _, _, b in refused)
    assert served == len(ok)
    assert spent == sum(Decimal(h["x-faregate-cost"]) for _, h, _ in ok)
    assert spent <= Decimal("1.00") + _one_request_estimate()


async def test_a_one_dollar_budget_under_100_concurrent_requests_embedded(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(output_tokens=1000)
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    gw = await start_gateway(tmp_path, url, mock, {**PRICEY, "budgets": [DOLLAR_BUDGET]})
    try:
        results = await asyncio.gather(*(_post(gw.url, gw.key, PRICEY_CHAT) for _ in range(100)))
        await gw.services.writer.flush()
    finally:
        await gw.runner.cleanup()
    spent, served = await _total_spend(url)
    _check_budget_run(results, spent, served)


async def test_a_one_dollar_budget_holds_across_two_processes_and_alerts_once(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(output_tokens=1000)
    key = await prepare_database(pg)
    async with Receiver() as hooks:
        extra = {
            **PRICEY,
            "redis_url": redis_url,
            "server": {"redis_prefix": redis_prefix},
            "budgets": [DOLLAR_BUDGET],
            "webhooks": {"hmac_key": HMAC_KEY, "endpoints": [hooks.url], "poll_seconds": 0.1},
        }
        replicas: list[Replica] = await start_replicas(tmp_path, pg, mock.url, extra)
        try:
            results = await asyncio.gather(
                *(_post(r.url, key, PRICEY_CHAT) for _ in range(50) for r in replicas)
            )
            spent, _ = await _total_spend(pg)  # settled, possibly not all written yet
            expected = ["budget.exceeded", "budget.threshold", "budget.threshold"]
            if spent >= Decimal("1.00"):
                expected.append("budget.threshold")
            alerts = await hooks.wait_for(len(expected))
        finally:
            await stop_replicas(replicas)
    spent, served = await _total_spend(pg)
    _check_budget_run(results, spent, served)
    # Each threshold crossed once, the refusal reported once, whichever process saw it.
    crossed = sorted(
        Decimal(a["threshold"]) for a in alerts if a["alert_type"] == "budget.threshold"
    )
    assert crossed == [t for t in (Decimal("0.5"), Decimal("0.8"), Decimal(1)) if spent >= t]
    assert [a["alert_type"] for a in alerts].count("budget.exceeded") == 1
    assert all(a["budget_id"] == "dollar" and a["value"] == "acme" for a in alerts)


MARKUP = Decimal("1.5")


@pytest.mark.parametrize(
    ("scope", "match", "period", "timezone"),
    [("team", "research", "week", "Asia/Tokyo"), ("key", "*", "month", "UTC")],
    ids=["team-week", "key-month"],
)
async def test_a_price_budget_holds_across_two_processes(
    tmp_path: Path,
    mock: MockServer,
    pg: str,
    redis_url: str,
    redis_prefix: str,
    scope: str,
    match: str,
    period: str,
    timezone: str,
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(output_tokens=1000)
    key = await prepare_database(pg)
    budget = {
        "id": "priced",
        "scope": scope,
        "match": match,
        "basis": "price",
        "amount": "1.00",
        "period": period,
        "timezone": timezone,
        "hard": True,
    }
    extra = {
        **PRICEY,
        "pricing": {"markup": str(MARKUP)},
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "budgets": [budget],
    }
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        results = await asyncio.gather(
            *(_post(r.url, key, PRICEY_CHAT) for _ in range(40) for r in replicas)
        )
    finally:
        await stop_replicas(replicas)
    ok = [h for status, h, _ in results if status == 200]
    refused = [b for status, _, b in results if status == 429]
    assert ok and refused and len(ok) + len(refused) == len(results)
    assert {orjson.loads(b)["error"]["code"] for b in refused} == {"budget_exceeded"}
    price, served = await _total_spend(pg, requests.c.price_nanos)
    cost, _ = await _total_spend(pg)
    assert served == len(ok) and mock.stats.requests == len(ok)
    assert price == sum(Decimal(h["x-faregate-price"]) for h in ok)
    assert price == cost * MARKUP  # the price, not the provider cost, filled the budget
    estimate = _estimated(MARKUP).est_price
    assert estimate is not None
    assert Decimal("1.00") - 2 * estimate < price <= Decimal("1.00") + estimate


@dataclass(frozen=True)
class ScopedBudgetCase:
    budget: dict[str, Any]  # scope and match of a hard $1.00 cost budget
    headers: dict[str, str]  # what puts a request under it
    control: tuple[dict[str, Any], dict[str, str]]  # traffic outside its scope


SCOPED_BUDGET_CASES = [
    # Every model its own budget: gpt-4o-mini's fills, claude-sonnet-4's stays far below.
    pytest.param(
        ScopedBudgetCase(
            {"scope": "model", "match": "*"}, {}, ({**PRICEY_CHAT, "model": "claude-sonnet-4"}, {})
        ),
        id="model",
    ),
    # The same model and key under another tag is not counted against the batch budget.
    pytest.param(
        ScopedBudgetCase(
            {"scope": "tag", "match": "batch"},
            {"X-Faregate-Tags": "batch"},
            (PRICEY_CHAT, {"X-Faregate-Tags": "interactive"}),
        ),
        id="tag",
    ),
]
CLAUDE_PRICE = {
    "provider": "anthropic",
    "model": "claude-sonnet-4",
    "effective_from": "2025-01-01",
    "input": 1,
    "output": 30,
}


@pytest.mark.parametrize("case", SCOPED_BUDGET_CASES)
async def test_a_model_or_tag_budget_holds_across_two_processes_and_spares_other_traffic(
    tmp_path: Path,
    mock: MockServer,
    pg: str,
    redis_url: str,
    redis_prefix: str,
    case: ScopedBudgetCase,
) -> None:
    for deployment in ("openai", "anthropic"):
        mock.config.deployments[deployment] = MockBehaviour(output_tokens=1000)
    key = await prepare_database(pg)
    budget = {"id": "scoped", **case.budget, "basis": "cost", "amount": "1.00", "period": "day"}
    extra = {
        "prices": {"models": [*PRICEY["prices"]["models"], CLAUDE_PRICE]},
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "budgets": [budget],
    }
    control_body, control_headers = case.control
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        # 80 requests in scope (about 33 fit) race 10 outside it on both processes ...
        results = await asyncio.gather(
            *(_post(r.url, key, PRICEY_CHAT, case.headers) for _ in range(40) for r in replicas),
            *(_post(r.url, key, control_body, control_headers) for _ in range(5) for r in replicas),
        )
        # ... and once the budget is spent, traffic in scope is refused, the rest still served.
        after = await asyncio.gather(
            *(_post(r.url, key, PRICEY_CHAT, case.headers) for r in replicas),
            *(_post(r.url, key, control_body, control_headers) for r in replicas),
        )
    finally:
        await stop_replicas(replicas)
    scoped, controls = results[:80], results[80:]
    ok = [h for status, h, _ in scoped if status == 200]
    refused = [b for status, _, b in scoped if status == 429]
    assert ok and refused and len(ok) + len(refused) == len(scoped)
    assert {orjson.loads(b)["error"]["code"] for b in refused} == {"budget_exceeded"}
    assert [status for status, _, _ in controls] == [200] * len(controls)
    assert [status for status, _, _ in after] == [429, 429, 200, 200]
    assert {orjson.loads(after[i][2])["error"]["code"] for i in (0, 1)} == {"budget_exceeded"}
    # Each call spends about its estimate (all 1,000 output tokens max_tokens allows), so what
    # the budget has left once calls are refused is below one estimate: later ones are refused.
    estimate = _one_request_estimate()
    costs = [Decimal(h["x-faregate-cost"]) for h in ok]
    assert all(estimate - Decimal("0.0001") < c <= estimate for c in costs)
    spent = sum(costs, Decimal(0))
    assert Decimal("1.00") - estimate < spent <= Decimal("1.00") + estimate
    served = [h for status, h, _ in [*controls, *after] if status == 200]
    control_spend = sum(Decimal(h["x-faregate-cost"]) for h in served)
    assert control_spend > 0  # the traffic spared was priced, just not counted in scope
    total, rows = await _total_spend(pg)
    assert (total, rows) == (spent + control_spend, len(ok) + len(served))
    assert mock.stats.requests == rows


async def test_two_processes_share_cached_answers_through_redis(
    tmp_path: Path, mock: MockServer, pg: str, redis_url: str, redis_prefix: str
) -> None:
    key = await prepare_database(pg)
    extra = {
        "redis_url": redis_url,
        "server": {"redis_prefix": redis_prefix},
        "cache": {"enabled": True},
    }
    body = {**CHAT, "temperature": 0}
    replicas = await start_replicas(tmp_path, pg, mock.url, extra)
    try:
        first = await _post(replicas[0].url, key, body)
        second = await _post(replicas[1].url, key, body)
        stream = {**body, "stream": True}
        streamed = await _post(replicas[1].url, key, stream)
        replayed = await _post(replicas[0].url, key, stream)
    finally:
        await stop_replicas(replicas)
    assert first[0] == second[0] == 200 and second[1]["x-faregate-cache"] == "hit"
    assert first[2] == second[2]
    # The same chunks; only the closing cost comment differs (a hit is free here).
    assert replayed[1].get("x-faregate-cache") == "hit"
    assert sse_events(replayed[2]) == sse_events(streamed[2])
    assert sse_comment(replayed[2], "x-faregate-price") == 0
    assert mock.stats.requests == 2
