"""What `/v1/messages` carries to each upstream and back, driven by the official anthropic
and openai SDKs against the gateway in front of the mock provider (SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from faregate.mockprovider.server import MockServer
from faregate.providers.http import Upstream
from tests.gateway.conftest import Running, start_gateway

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> AsyncIterator[Running]:
    running = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", mock)
    yield running
    await running.runner.cleanup()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every body the gateway sends upstream, in order."""
    bodies: list[dict[str, Any]] = []
    post_json, stream = Upstream.post_json, Upstream.stream

    async def recording_post(self: Upstream, url: str, body: dict[str, Any], parse: Any) -> Any:
        bodies.append(body)
        return await post_json(self, url, body, parse)

    def recording_stream(self: Upstream, url: str, body: dict[str, Any], *rest: Any) -> Any:
        bodies.append(body)
        return stream(self, url, body, *rest)

    monkeypatch.setattr(Upstream, "post_json", recording_post)
    monkeypatch.setattr(Upstream, "stream", recording_stream)
    return bodies


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


# -- content blocks --------------------------------------------------------------------

TWO_BLOCKS: Any = [{"type": "text", "text": "sys1"}, {"type": "text", "text": "sys2"}]
HISTORY: Any = [
    {"role": "user", "content": "Hello"},
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
    },
    {"role": "user", "content": "Go on"},
]


async def test_text_blocks_reach_claude_as_blocks(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    await claude.messages.create(
        model="claude-sonnet-4", max_tokens=5, system=TWO_BLOCKS, messages=HISTORY
    )
    assert sent[-1]["system"] == TWO_BLOCKS
    assert sent[-1]["messages"][1]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]


async def test_text_blocks_reach_openai_wire_hosts_as_parts(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    await claude.messages.create(
        model="gpt-4o-mini", max_tokens=5, system=TWO_BLOCKS, messages=HISTORY
    )
    system, _, assistant, _ = sent[-1]["messages"]
    assert system == {"role": "system", "content": TWO_BLOCKS}
    assert assistant["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]


async def test_text_blocks_reach_gemini_as_parts(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    await claude.messages.create(
        model="gemini-2.5-flash", max_tokens=5, system=TWO_BLOCKS, messages=HISTORY
    )
    assert sent[-1]["systemInstruction"] == {"parts": [{"text": "sys1"}, {"text": "sys2"}]}
    assert sent[-1]["contents"][1] == {"role": "model", "parts": [{"text": "one"}, {"text": "two"}]}
