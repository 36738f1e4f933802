"""What `/v1/messages` carries to each upstream and back, driven by the official anthropic
and openai SDKs against the gateway in front of the mock provider (SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import pytest

from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import Running, start_gateway

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> AsyncIterator[Running]:
    running = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", mock)
    yield running
    await running.runner.cleanup()


@pytest.fixture
async def claude(gw: Running) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    async with client:
        yield client


# -- stop sequences ------------------------------------------------------------------


async def test_a_matched_stop_sequence_comes_back_from_claude(
    claude: anthropic.AsyncAnthropic,
) -> None:
    # The mock answers "Lorem ipsum dolor sit amet ...", cut where a stop sequence matches.
    ask = {"model": "claude-sonnet-4", "max_tokens": 20, "messages": HELLO}
    message = await claude.messages.create(**ask, stop_sequences=["never", "dolor"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "dolor")
    assert message.content[0].type == "text" and message.content[0].text == "Lorem ipsum "
    async with claude.messages.stream(**ask, stop_sequences=["never", "dolor"]) as stream:
        final = await stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "dolor")


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
async def test_upstreams_that_cannot_name_the_sequence_answer_end_turn(
    claude: anthropic.AsyncAnthropic, model: str
) -> None:
    message = await claude.messages.create(
        model=model, max_tokens=20, messages=HELLO, stop_sequences=["dolor"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
