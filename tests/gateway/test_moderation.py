"""Pre-flight moderation through the running gateway: local rules and the provider's
moderation endpoint stop a prompt before the expensive model, the price it would have cost
is recorded as saved, a flag reports without blocking, keys opt into policies, and
`POST /v1/moderations` is proxied."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from faregate.auth.principal import Principal
from faregate.auth.service import KeyService
from faregate.gateway.call import Call
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.money import to_nanos
from faregate.store.tables.metering import requests
from tests.gateway.conftest import ADMIN_KEY, Running, gateway_config, log_lines, start_gateway

CHAT_PATH = "/v1/chat/completions"
MOD_PATH = "/v1/moderations"


def _config(mock: MockServer, moderation: dict[str, Any]) -> dict[str, Any]:
    models = gateway_config(mock.url)["models"] + [
        {
            "name": "omni-moderation-latest",
            "kind": "moderations",
            "deployments": [{"provider": "openai", "model": "omni-moderation-latest"}],
        }
    ]
    return {"models": models, "moderation": moderation}


async def _chat(gw: Running, key: str, text: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": text}],
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + CHAT_PATH, json=body, headers={"Authorization": f"Bearer {key}"}) as r,
    ):
        return r.status, await r.json(), dict(r.headers)


async def _row(gw: Running, request_id: str) -> Any:
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        query = select(requests).where(requests.c.id == request_id)
        return (await conn.execute(query)).mappings().one()


async def test_the_provider_moderation_endpoint_blocks_before_the_expensive_model(
    tmp_path: Path, mock: MockServer
) -> None:
    moderation = {
        "provider_model": "omni-moderation-latest",
        "policies": [{"id": "openai", "provider": True, "action": "block"}],
    }
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock, moderation)
    )
    try:
        status, body, headers = await _chat(gw, gw.key, "how do I build a bomb")
        assert (status, body["error"]["code"]) == (400, "content_policy_violation")
        assert mock.stats.requests_for(route=CHAT_PATH) == 0
        assert mock.stats.requests_for(route=MOD_PATH) == 1
        row = await _row(gw, headers["x-faregate-request-id"])
        assert row["status"] == 400 and row["error_code"] == "content_policy_violation"
        assert row["saved_nanos"] > 0 and row["cost_nanos"] == row["price_nanos"] == 0

        status, _, _ = await _chat(gw, gw.key, "how do I bake bread")
        assert status == 200
        assert mock.stats.requests_for(route=CHAT_PATH) == 1
        assert mock.stats.requests_for(route=MOD_PATH) == 2
    finally:
        await gw.runner.cleanup()


async def test_a_blocked_prompt_records_the_price_it_would_have_cost_as_saved(
    tmp_path: Path, mock: MockServer
) -> None:
    moderation = {"policies": [{"id": "secrets", "keywords": ["launch codes"]}]}
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock, moderation)
    )
    try:
        status, _, headers = await _chat(gw, gw.key, "the launch codes are")
        assert status == 400 and mock.stats.requests == 0
        row = await _row(gw, headers["x-faregate-request-id"])
        # The same prompt, let through once the rule is gone, has this worst-case price.
        estimate = gw.services.components["pricer"]
        call = Call(
            "x",
            Principal("k", "p"),
            "chat",
            "gpt-4o-mini",
            {
                "model": "gpt-4o-mini",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "the launch codes are"}],
            },
        )
        call.group = gw.services.router.resolve("gpt-4o-mini")
        estimate.estimate_call(call)
        assert row["saved_nanos"] == to_nanos(call.est_price) > 0
    finally:
        await gw.runner.cleanup()


async def _matches(gw: Running) -> dict[tuple[str, str], float]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics", headers=headers) as r:
        text = await r.text()
    return {
        (sample.labels["policy"], sample.labels["action"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "faregate_moderation_matches_total"
    }


async def test_a_flag_policy_reports_the_match_and_lets_the_request_through(
    tmp_path: Path, mock: MockServer, captured_logs: io.StringIO
) -> None:
    moderation = {
        "policies": [
            {"id": "watch", "keywords": ["project falcon"], "action": "flag"},
            {"id": "secrets", "keywords": ["launch codes"]},
        ]
    }
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock, moderation)
    )
    try:
        status, _, flagged = await _chat(gw, gw.key, "how is Project Falcon going")
        assert status == 200 and mock.stats.requests_for(route=CHAT_PATH) == 1
        assert flagged["x-faregate-moderation"] == "flagged"
        status, _, clean = await _chat(gw, gw.key, "how is the weather")
        assert status == 200 and "x-faregate-moderation" not in clean
        assert (await _chat(gw, gw.key, "the launch codes are"))[0] == 400
        assert await _matches(gw) == {("watch", "flag"): 1.0, ("secrets", "block"): 1.0}
    finally:
        await gw.runner.cleanup()
    reports = [
        line
        for line in log_lines(captured_logs)
        if line["logger"] == "faregate.moderation" and line.get("action") == "flag"
    ]
    assert len(reports) == 1
    assert reports[0]["level"] == "warning" and reports[0]["policy"] == "watch"
    assert reports[0]["request_id"] == flagged["x-faregate-request-id"]
    assert "falcon" not in captured_logs.getvalue().lower()  # neither the text nor the rule


async def test_a_key_opts_into_a_policy_through_its_settings(
    tmp_path: Path, mock: MockServer
) -> None:
    moderation = {
        "policies": [
            {"id": "strict", "keywords": ["draft"], "apply_to": {"teams": ["nobody"]}},
        ]
    }
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock, moderation)
    )
    try:
        strict, _ = await KeyService(gw.services.engine, ADMIN_KEY).create_key(
            name="strict", customer_external_id="acme", settings={"moderation": ["strict"]}
        )
        assert (await _chat(gw, gw.key, "a draft reply"))[0] == 200
        status, body, _ = await _chat(gw, strict, "a draft reply")
        assert (status, body["error"]["code"]) == (400, "content_policy_violation")
        assert mock.stats.requests_for(route=CHAT_PATH) == 1
    finally:
        await gw.runner.cleanup()


@pytest.mark.parametrize("on_error", ["allow", "block"])
async def test_a_failing_moderation_provider_allows_or_blocks_as_configured(
    tmp_path: Path, mock: MockServer, on_error: str
) -> None:
    moderation = {
        "provider_model": "omni-moderation-latest",
        "on_provider_error": on_error,
        "policies": [{"id": "openai", "provider": True}],
    }
    config = _config(mock, moderation)
    config["providers"] = gateway_config(mock.url)["providers"] | {
        "modhost": {"wire": "openai", "base_url": f"{mock.url}/d/modhost/v1", "api_key": "k"}
    }
    config["models"][-1]["deployments"] = [{"provider": "modhost", "model": "omni-moderation"}]
    mock.config.deployments["modhost"] = MockBehaviour(error_rate=1.0)
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        status, _, _ = await _chat(gw, gw.key, "hello there")
        assert status == (200 if on_error == "allow" else 400)
    finally:
        await gw.runner.cleanup()


async def test_moderations_are_proxied_for_the_openai_sdk(tmp_path: Path, mock: MockServer) -> None:
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock, {})
    )
    try:
        client = AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key)
        flagged = await client.moderations.create(
            model="omni-moderation-latest", input="I will attack them"
        )
        assert flagged.results[0].flagged and flagged.results[0].categories.violence
        clean = await client.moderations.create(input=["a quiet walk", "tea"])
        assert [r.flagged for r in clean.results] == [False, False]
        assert mock.stats.requests_for(route=MOD_PATH) == 2
        await client.close()
    finally:
        await gw.runner.cleanup()
