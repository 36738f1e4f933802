"""Effort and sampling while thinking, end to end: reasoning_effort with sampling Claude
refuses while thinking, `output_config.effort` from `/v1/messages` to each upstream, and
reasoning_effort as adaptive thinking at an effort on a provider set to think so; driven by
the official openai and anthropic SDKs against the gateway in front of the mock provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from faregate.mockprovider.server import MockServer
from tests.gateway import test_sdk_messages as messages_suite
from tests.gateway.conftest import Running, gateway_config, start_gateway

gw = messages_suite.gw
sent = messages_suite.sent
claude = messages_suite.claude

ASK: Any = {"role": "user", "content": "Think"}


def _openai(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)


# -- sampling while thinking ------------------------------------------------------------


async def test_reasoning_effort_with_sampling_claude_refuses_while_thinking_is_answered(
    gw: Running, sent: list[dict[str, Any]]
) -> None:
    async with _openai(gw) as client:
        reply = await client.chat.completions.create(
            model="claude-sonnet-4",
            max_tokens=4096,
            reasoning_effort="low",
            temperature=0.2,
            top_p=0.5,
            extra_body={"top_k": 5},
            messages=[ASK],
        )
    assert reply.choices[0].message.content
    body = sent[-1]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "temperature" not in body and "top_k" not in body and body["top_p"] == 0.95


async def test_thinking_the_client_asked_for_with_a_temperature_is_claudes_400(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(
            model="claude-sonnet-4",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[ASK],
            extra_body={"temperature": 0.5},
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "`temperature` may only be set to 1" in str(info.value)
    assert sent[-1]["temperature"] == 0.5


# -- output_config.effort ---------------------------------------------------------------


async def test_output_config_effort_reaches_claude_with_the_format(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    schema: Any = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    config: Any = {"effort": "low", "format": {"type": "json_schema", "schema": schema}}
    await claude.messages.create(
        model="claude-sonnet-4", max_tokens=64, messages=[ASK], output_config=config
    )
    assert sent[-1]["output_config"] == config


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
async def test_output_config_effort_does_not_reach_other_upstreams(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]], model: str
) -> None:
    message = await claude.messages.create(
        model=model, max_tokens=16, messages=[ASK], output_config={"effort": "high"}
    )
    assert message.content[0].type == "text"
    assert "effort" not in str(sent[-1]) and "reasoning_effort" not in sent[-1]


async def test_an_output_config_effort_that_is_not_a_string_is_a_400_naming_it(
    claude: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(
            model="claude-sonnet-4",
            max_tokens=16,
            messages=[ASK],
            output_config={"effort": 3},  # type: ignore[typeddict-item]
        )
    assert "output_config.effort" in str(info.value)


# -- adaptive providers -------------------------------------------------------------------


@pytest.fixture
async def adaptive(tmp_path: Path, mock: MockServer) -> AsyncIterator[Running]:
    config = gateway_config(mock.url)
    provider = {**config["providers"]["anthropic"], "thinking": "adaptive"}
    deployment = {
        "provider": "adaptive",
        "model": "claude-opus-4-7",
        "price_key": "claude-sonnet-4",
    }
    extra = {
        "providers": {**config["providers"], "adaptive": provider},
        "models": [*config["models"], {"name": "claude-opus-4-7", "deployments": [deployment]}],
    }
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    running = await start_gateway(tmp_path, url, mock, extra)
    yield running
    await running.runner.cleanup()


async def test_reasoning_effort_reaches_an_adaptive_provider_as_adaptive_thinking_at_an_effort(
    adaptive: Running, sent: list[dict[str, Any]]
) -> None:
    async with _openai(adaptive) as client:
        reply = await client.chat.completions.create(
            model="claude-opus-4-7",
            max_tokens=2048,
            reasoning_effort="medium",
            temperature=0.3,
            messages=[ASK],
        )
    body = sent[-1]
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": "medium"}
    assert "temperature" not in body and "reasoning_effort" not in body
    usage = reply.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 10
