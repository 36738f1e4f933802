"""Metrics at /metrics, optional traces, and logs and error bodies that never carry a secret,
through the running gateway."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from faregate.logs import JsonFormatter
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.conftest import free_port
from tests.gateway.conftest import ADMIN_KEY, Running, log_lines, start_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "gpt-4o-mini", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}


async def _gateway(tmp_path: Path, mock: MockServer, extra: dict[str, Any] | None = None) -> Any:
    return await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, extra)


async def _scrape(s: aiohttp.ClientSession, gw: Running, headers: Any = ADMIN) -> Any:
    async with s.get(f"{gw.url}/metrics", headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_requests_tokens_money_latency_and_breakers(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _gateway(tmp_path, mock)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:
            for _ in range(2):
                async with s.post(f"{gw.url}/v1/chat/completions", json=CHAT) as r:
                    assert r.status == 200
                    cost = float(r.headers["x-faregate-cost"])
            async with s.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "nope"}):
                pass
            bad = {"Authorization": "Bearer fg_nope_nope"}
            async with s.post(f"{gw.url}/v1/chat/completions", json=CHAT, headers=bad):
                pass
            stream = {**CHAT, "stream": True}
            async with s.post(f"{gw.url}/v1/chat/completions", json=stream) as r:
                await r.read()
            status, content_type, text = await _scrape(s, gw)
        assert status == 200 and content_type.startswith("text/plain")
        m = _samples(text)
        who = {"model": "gpt-4o-mini", "provider": "openai", "team": "research"}
        assert _value(m, "faregate_requests_total", **who, status="200") == 3
        assert _value(m, "faregate_tokens_total", **who, type="output") == 9
        assert _value(m, "faregate_tokens_total", **who, type="input") > 0
        assert _value(m, "faregate_cost_total", **who) == pytest.approx(3 * cost)
        assert _value(m, "faregate_price_total", **who) == pytest.approx(3 * cost)
        by_route = {"model": "gpt-4o-mini", "provider": "openai"}
        assert _value(m, "faregate_request_duration_seconds_count", **by_route) == 3
        assert _value(m, "faregate_time_to_first_token_seconds_count", **by_route) == 1
        assert _value(m, "faregate_upstream_attempts_total", **by_route) == 3
        assert (
            _value(m, "faregate_breaker_state", deployment="gpt-4o-mini/openai/0", state="closed")
            == 1
        )
        assert _value(m, "faregate_requests_in_flight") == 0
        assert _value(m, "faregate_holds_in_flight") == 0
        # Refused before routing: not a request of any model, but an error response.
        assert (
            _value(m, "faregate_error_responses_total", status="404", code="model_not_found") == 1
        )
        assert (
            _value(m, "faregate_error_responses_total", status="401", code="invalid_api_key") == 1
        )
    finally:
        await gw.runner.cleanup()


async def test_requests_and_budget_holds_in_flight_are_gauged_while_they_wait(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(latency=0.5)
    budget = {
        "id": "b",
        "scope": "team",
        "match": "research",
        "basis": "cost",
        "amount": "100",
        "period": "month",
        "hard": True,
    }
    gw = await _gateway(tmp_path, mock, {"budgets": [budget]})
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:

            async def one() -> int:
                async with s.post(f"{gw.url}/v1/chat/completions", json=CHAT) as r:
                    return r.status

            pending = [asyncio.create_task(one()) for _ in range(3)]
            for _ in range(100):
                during = _samples((await _scrape(s, gw))[2])
                if _value(during, "faregate_requests_in_flight") == 3:
                    break
                await asyncio.sleep(0.01)
            assert _value(during, "faregate_holds_in_flight") == 3
            assert await asyncio.gather(*pending) == [200, 200, 200]
            after = _samples((await _scrape(s, gw))[2])
        assert _value(after, "faregate_requests_in_flight") == 0
        assert _value(after, "faregate_holds_in_flight") == 0
    finally:
        await gw.runner.cleanup()


async def test_metrics_need_the_admin_key_or_the_scrape_token_unless_public(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _gateway(tmp_path, mock, {"metrics": {"token": "scrape-me"}})
    try:
        async with aiohttp.ClientSession() as s:
            assert (await _scrape(s, gw, {}))[0] == 401
            assert (await _scrape(s, gw, {"Authorization": f"Bearer {gw.key}"}))[0] == 403
            assert (await _scrape(s, gw, {"Authorization": "Bearer scrape-me"}))[0] == 200
            assert (await _scrape(s, gw))[0] == 200
    finally:
        await gw.runner.cleanup()
    public = await _gateway(tmp_path / "p", mock, {"metrics": {"public": True}})
    try:
        async with aiohttp.ClientSession() as s:
            assert (await _scrape(s, public, {}))[0] == 200
    finally:
        await public.runner.cleanup()
    off = await _gateway(tmp_path / "o", mock, {"metrics": {"enabled": False}})
    try:
        async with aiohttp.ClientSession() as s:
            assert (await _scrape(s, off))[0] == 404
    finally:
        await off.runner.cleanup()


async def test_a_cache_hit_shows_in_the_hit_ratio(tmp_path: Path, mock: MockServer) -> None:
    gw = await _gateway(tmp_path, mock, {"cache": {"enabled": True}})
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:
            body = {**CHAT, "temperature": 0}
            for _ in range(2):
                async with s.post(f"{gw.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200
                    hit = r.headers.get("x-faregate-cache")
            status, _, text = await _scrape(s, gw, ADMIN)
        assert status == 200
        m = _samples(text)
        assert hit == "hit"
        assert _value(m, "faregate_cache_lookups_total", model="gpt-4o-mini") == 2
        assert _value(m, "faregate_cache_hits_total", model="gpt-4o-mini") == 1
    finally:
        await gw.runner.cleanup()


async def test_tracing_is_off_unless_configured_and_on_when_it_is(
    tmp_path: Path, mock: MockServer
) -> None:
    off = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", mock)
    try:
        assert off.services.components["observability"].tracer is None
    finally:
        await off.runner.cleanup()
    on = await start_gateway(
        tmp_path / "on",
        f"sqlite+aiosqlite:///{tmp_path / 'b.db'}",
        mock,
        {"tracing": {"enabled": True}},
    )
    try:
        assert on.services.components["observability"].tracer is not None
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {on.key}"}) as s,
            s.post(f"{on.url}/v1/chat/completions", json=body) as r,
        ):
            assert r.status == 200  # spans go to the process's (here: no-op) provider
    finally:
        await on.runner.cleanup()


PROVIDER_SECRET = "sk-provider-SECRET-0123456789abcdef"


@pytest.fixture
async def leaky_upstream() -> AsyncIterator[str]:
    """An upstream that quotes the key it was sent in its error messages, as some do."""

    async def handler(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        body = await request.json()
        status = 500 if "fail" in str(body.get("messages")) else 400
        message = f"Invalid request with key {given}; key was {given.removeprefix('Bearer ')}"
        return web.json_response({"error": {"message": message, "type": "x"}}, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_no_provider_key_or_api_key_reaches_logs_or_error_bodies(
    tmp_path: Path, mock: MockServer, leaky_upstream: str, captured_logs: io.StringIO
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(require_key="another-key")
    extra = {
        "providers": {
            "openai": {
                "wire": "openai",
                "base_url": f"{mock.url}/d/openai/v1",
                "api_key": PROVIDER_SECRET,
            },
            "leaky": {
                "wire": "openai",
                "base_url": f"{leaky_upstream}/v1",
                "api_key": PROVIDER_SECRET,
            },
        },
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "openai", "model": "m"}]},
            {"name": "leaky", "deployments": [{"provider": "leaky", "model": "m"}]},
        ],
    }
    extra["observability"] = {"access_log": True}
    gw = await _gateway(tmp_path, mock, extra)
    bodies: list[str] = []
    wrong_key = gw.key[:-6] + "zzzzzz"
    try:
        async with aiohttp.ClientSession() as s:
            for key, model, text in (
                (gw.key, "gpt-4o-mini", "hi"),  # the upstream refuses the provider key
                (gw.key, "leaky", "hi"),  # a 400 that quotes the key
                (gw.key, "leaky", "fail"),  # a 500 that quotes the key
                (wrong_key, "gpt-4o-mini", "hi"),  # a client key that does not verify
                (gw.key, "gpt-4o-mini", "x" * 10),
            ):
                body = {**CHAT, "model": model, "messages": [{"role": "user", "content": text}]}
                for stream in (False, True):
                    async with s.post(
                        f"{gw.url}/v1/chat/completions",
                        json={**body, "stream": stream},
                        headers={"Authorization": f"Bearer {key}"},
                    ) as r:
                        assert r.status >= 400
                        bodies.append(await r.text())
                        bodies.append(str(dict(r.headers)))
            async with s.get(f"{gw.url}/api/v1/deployments/health", headers=ADMIN) as r:
                bodies.append(await r.text())
            bodies.append((await _scrape(s, gw))[2])
    finally:
        await gw.runner.cleanup()
    logs = captured_logs.getvalue()
    assert "upstream" in "".join(bodies)  # the errors did happen and were explained
    assert any(line["logger"] == "faregate.access" for line in log_lines(captured_logs))
    for secret in (PROVIDER_SECRET, gw.key, wrong_key, ADMIN_KEY, gw.key[12:], "another-key"):
        assert secret not in logs
        for body in bodies:
            assert secret not in body


def test_log_fields_named_like_secrets_are_redacted() -> None:
    record = logging.LogRecord("faregate", logging.INFO, __file__, 1, "m", (), None)
    record.api_key = "fg_live_abc"
    record.authorization = "Bearer fg_live_abc"
    record.provider_secret = "sk-x"
    record.key_id = "key_123"
    line = JsonFormatter().format(record)
    assert "fg_live_abc" not in line and "sk-x" not in line
    assert '"key_id":"key_123"' in line


async def test_a_line_logged_while_handling_a_request_carries_its_request_id(
    tmp_path: Path, mock: MockServer, captured_logs: io.StringIO
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(error_rate=1.0)
    gw = await _gateway(tmp_path, mock, {"routing": {"breaker": {"failure_threshold": 1}}})
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s,
            s.post(f"{gw.url}/v1/chat/completions", json=CHAT) as r,
        ):
            assert r.status >= 500
            request_id = r.headers["x-faregate-request-id"]
    finally:
        await gw.runner.cleanup()
    # The provider's error opened the breaker; the outage alert is logged from that request.
    outage = [line for line in log_lines(captured_logs) if line["msg"] == "alert provider.outage"]
    assert [line["request_id"] for line in outage] == [request_id]
    # Lines logged outside any request (startup, shutdown) carry none.
    assert any("request_id" not in line for line in log_lines(captured_logs))


async def test_the_access_log_writes_one_line_per_request_only_when_enabled(
    tmp_path: Path, mock: MockServer, captured_logs: io.StringIO
) -> None:
    off = await _gateway(tmp_path / "off", mock)
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {off.key}"}) as s,
            s.post(f"{off.url}/v1/chat/completions", json=CHAT) as r,
        ):
            assert r.status == 200
    finally:
        await off.runner.cleanup()
    assert not [line for line in log_lines(captured_logs) if line["logger"] == "faregate.access"]
    gw = await _gateway(tmp_path, mock, {"observability": {"access_log": True}})
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:
            async with s.post(f"{gw.url}/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
                headers = r.headers
            async with s.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "x"}) as r:
                assert r.status == 404  # refused before the pipeline: not a gateway call
    finally:
        await gw.runner.cleanup()
    access = [line for line in log_lines(captured_logs) if line["logger"] == "faregate.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == headers["x-faregate-request-id"]
    assert (line["model"], line["deployment"], line["status"]) == (
        "gpt-4o-mini",
        headers["x-faregate-deployment"],
        200,
    )
    assert line["input_tokens"] > 0 and line["output_tokens"] == 3
    assert (line["cost"], line["price"]) == (
        headers["x-faregate-cost"],
        headers["x-faregate-price"],
    )
    assert float(line["latency_ms"]) > 0 and line["key_id"]
    text = str(line)
    assert gw.key not in text and "messages" not in line and "hi" not in line.values()
