"""A streamed `/v1/messages` answer's usage, as the anthropic SDK builds its final message
(`cache_creation` from message_start, the counts message_delta restates), is the usage of
the same answer whole, whatever upstream served it; driven by the official anthropic SDK
against the gateway in front of the mock provider (SQLite)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.gateway import test_sdk_messages as messages_suite

gw = messages_suite.gw
claude = messages_suite.claude


def _ask(model: str, text: str, cache_control: Any = None) -> dict[str, Any]:
    block: Any = {"type": "text", "text": text}
    if cache_control is not None:
        block["cache_control"] = cache_control
    return {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}


async def _streamed_usage(claude: anthropic.AsyncAnthropic, ask: dict[str, Any]) -> Any:
    async with claude.messages.stream(**ask) as stream:
        return (await stream.get_final_message()).usage


@pytest.mark.parametrize("ttl", ["5m", "1h"])
async def test_claudes_cache_writes_and_reads_by_lifetime_come_back_alike_streamed(
    claude: anthropic.AsyncAnthropic, ttl: str
) -> None:
    mark = {"type": "ephemeral", "ttl": ttl}
    # Two prompts of one size, each written on its first sight and read on its second.
    first, second = (
        _ask("claude-sonnet-4", "h" * 8000, mark),
        _ask("claude-sonnet-4", "i" * 8000, mark),
    )
    written = (await claude.messages.create(**first)).usage
    assert written.cache_creation is not None and written.cache_creation_input_tokens == 1024
    assert written.cache_creation.model_dump()[f"ephemeral_{ttl}_input_tokens"] == 1024
    assert (await _streamed_usage(claude, second)).model_dump() == written.model_dump()
    read = (await claude.messages.create(**second)).usage
    assert read.cache_read_input_tokens == 1024 and read.cache_creation_input_tokens == 0
    assert (await _streamed_usage(claude, first)).model_dump() == read.model_dump()


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
async def test_other_upstreams_cache_reads_come_back_alike_streamed(
    claude: anthropic.AsyncAnthropic, model: str
) -> None:
    ask = _ask(model, "h" * 8000)
    whole = (await claude.messages.create(**ask)).usage
    assert whole.cache_read_input_tokens and whole.input_tokens  # a long prompt's cached prefix
    assert (await _streamed_usage(claude, ask)).model_dump() == whole.model_dump()
