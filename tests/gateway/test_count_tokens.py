"""`POST /v1/messages/count_tokens` through the gateway with the anthropic SDK: counted by an
Anthropic deployment when one would serve the request, estimated by faregate otherwise,
never metered, and refused in Anthropic's error shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from sqlalchemy import func, select

from faregate.auth.service import KeyService
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.store.tables.metering import requests
from faregate.tokens import count_chat_input_tokens
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

SYSTEM = "You answer questions about the weather, briefly."
MESSAGES: list[Any] = [
    {"role": "user", "content": "What is the weather in Paris today?"},
    {"role": "assistant", "content": "Sunny, 21 degrees."},
    {"role": "user", "content": [{"type": "text", "text": "And tomorrow, in Lyon and Nice?"}]},
]
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "The weather in a city on a day",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "day": {"type": "string"}},
            "required": ["city"],
        },
    }
]


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> Any:
    running = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {
            "models": [
                {
                    "name": "claude-sonnet-4",
                    "deployments": [{"provider": "anthropic", "model": "claude-sonnet-4"}],
                },
                {
                    "name": "gpt-4o-mini",
                    "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
                },
                {
                    # Anthropic first, OpenAI when Anthropic cannot answer.
                    "name": "assistant",
                    "deployments": [
                        {"provider": "anthropic", "model": "claude-sonnet-4", "priority": 0},
                        {"provider": "openai", "model": "gpt-4o-mini", "priority": 1},
                    ],
                },
                {
                    "name": "text-embedding-3-small",
                    "kind": "embeddings",
                    "deployments": [{"provider": "openai", "model": "text-embedding-3-small"}],
                },
            ]
        },
    )
    yield running
    await running.runner.cleanup()


def _client(gw: Running, key: str | None = None) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=key or gw.key, max_retries=0)


async def _stored_requests(gw: Running) -> int:
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(requests))).scalar_one())


async def test_an_anthropic_deployment_counts_what_the_message_will_bill(gw: Running) -> None:
    async with _client(gw) as client:
        raw = await client.messages.with_raw_response.count_tokens(
            model="claude-sonnet-4", system=SYSTEM, messages=MESSAGES, tools=TOOLS
        )
        counted = await raw.parse()
        message = await client.messages.create(
            model="claude-sonnet-4", max_tokens=5, system=SYSTEM, messages=MESSAGES, tools=TOOLS
        )
    assert counted.input_tokens == message.usage.input_tokens > 0
    assert raw.headers["x-faregate-token-count"] == "upstream"
    assert raw.headers["x-faregate-deployment"].startswith("claude-sonnet-4/")
    assert raw.headers["request-id"] == raw.headers["x-faregate-request-id"]
    # Counting for the mock: what it counts for the request sent to it directly.
    direct = anthropic.AsyncAnthropic(
        base_url=f"{gw.mock.url}/d/anthropic", api_key="k", max_retries=0
    )
    async with direct:
        upstream = await direct.messages.count_tokens(
            model="claude-sonnet-4", system=SYSTEM, messages=MESSAGES, tools=TOOLS
        )
    assert counted.input_tokens == upstream.input_tokens


async def test_other_providers_get_faregates_estimate(gw: Running) -> None:
    async with _client(gw) as client:
        raw = await client.messages.with_raw_response.count_tokens(
            model="gpt-4o-mini", system=SYSTEM, messages=MESSAGES
        )
        longer = await client.messages.count_tokens(
            model="gpt-4o-mini", system=SYSTEM * 10, messages=MESSAGES
        )
    expected = count_chat_input_tokens(
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": MESSAGES[0]["content"]},
                {"role": "assistant", "content": MESSAGES[1]["content"]},
                {"role": "user", "content": [{"type": "text", "text": MESSAGES[2]["content"][0]["text"]}]},
            ]
        }
    )  # fmt: skip
    assert (await raw.parse()).input_tokens == expected
    assert raw.headers["x-faregate-token-count"] == "estimate"
    assert "x-faregate-deployment" not in raw.headers
    assert longer.input_tokens > expected


async def test_an_upstream_that_cannot_count_hands_over_to_the_next_in_line(
    gw: Running, mock: MockServer
) -> None:
    mock.config.deployments["anthropic"] = MockBehaviour(error_rate=1.0)
    async with _client(gw) as client:
        alone = await client.messages.with_raw_response.count_tokens(
            model="claude-sonnet-4", messages=MESSAGES
        )
        grouped = await client.messages.with_raw_response.count_tokens(
            model="assistant", messages=MESSAGES
        )
    assert alone.headers["x-faregate-token-count"] == "estimate"
    assert (await alone.parse()).input_tokens > 0
    # The OpenAI deployment next in line counts as faregate does.
    assert grouped.headers["x-faregate-token-count"] == "estimate"
    assert (await grouped.parse()).input_tokens == (await alone.parse()).input_tokens
    # Counting failures are not the deployment's health: chat is still served by it.
    health = gw.services.health
    assert all(health.state(d) == "closed" for d in health_ids(gw, "claude-sonnet-4"))


def health_ids(gw: Running, group: str) -> list[str]:
    return [d.id for d in gw.services.router.resolve(group).deployments]


async def test_a_refusal_from_the_upstream_is_the_answer(gw: Running, mock: MockServer) -> None:
    mock.config.deployments["anthropic"] = MockBehaviour(bad_request_rate=1.0)
    async with _client(gw) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES)
    body = caught.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"


async def test_counting_is_not_metered(gw: Running) -> None:
    before = await _stored_requests(gw)
    async with _client(gw) as client:
        for model in ("claude-sonnet-4", "gpt-4o-mini"):
            await client.messages.count_tokens(model=model, messages=MESSAGES)
    assert await _stored_requests(gw) == before


async def test_bad_requests_are_anthropic_errors(gw: Running) -> None:
    async with _client(gw) as client:
        with pytest.raises(anthropic.BadRequestError) as missing:
            await client.messages.count_tokens(model="claude-sonnet-4", messages=[])
        with pytest.raises(anthropic.BadRequestError) as role:
            await client.messages.count_tokens(
                model="claude-sonnet-4", messages=[{"role": "system", "content": "x"}]
            )
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await client.messages.count_tokens(model="no-such-model", messages=MESSAGES)
        with pytest.raises(anthropic.BadRequestError) as kind:
            await client.messages.count_tokens(model="text-embedding-3-small", messages=MESSAGES)
        with pytest.raises(anthropic.BadRequestError) as system:
            await client.messages.count_tokens(
                model="claude-sonnet-4",
                messages=MESSAGES,
                system=5,  # type: ignore[arg-type]
            )
    for caught in (missing, role, unknown, kind, system):
        body = caught.value.body
        assert isinstance(body, dict) and body["type"] == "error", body
    async with _client(gw, "fg_not_a_key") as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES)


async def test_a_key_counts_only_for_the_models_it_may_use(gw: Running) -> None:
    key, _ = await KeyService(gw.services.engine, ADMIN_KEY).create_key(
        name="narrow", customer_external_id="acme", allowed_models=["gpt-4o-mini"]
    )
    async with _client(gw, key) as client:
        assert (
            await client.messages.count_tokens(model="gpt-4o-mini", messages=MESSAGES)
        ).input_tokens
        with pytest.raises(anthropic.PermissionDeniedError):
            await client.messages.count_tokens(model="claude-sonnet-4", messages=MESSAGES)
