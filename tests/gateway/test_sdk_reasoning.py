"""Extended thinking and 1-hour prompt caching through `/v1/messages` (and reasoning through
`/v1/chat/completions`), driven by the official anthropic and openai SDKs against the
gateway in front of the mock provider (SQLite)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from faregate.mockprovider.anthropic_thinking import REDACTED_TRIGGER
from tests.gateway import test_sdk_messages as messages_suite
from tests.gateway.conftest import Running

# The Messages suite's gateway, upstream-body recorder and anthropic client.
gw = messages_suite.gw
sent = messages_suite.sent
claude = messages_suite.claude

THINK: Any = {"type": "enabled", "budget_tokens": 1024}
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def _openai(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)


# -- thinking on Claude -------------------------------------------------------------------


async def test_thinking_reaches_claude_as_sent_and_its_blocks_come_back_signed(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    ask: Any = {"type": "enabled", "budget_tokens": 1500, "display": "summarized"}
    message = await claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=2048,
        thinking=ask,
        messages=[{"role": "user", "content": "Think first"}],
    )
    assert sent[-1]["thinking"] == ask
    thought, text = message.content
    assert thought.type == "thinking" and thought.thinking and thought.signature
    assert text.type == "text" and text.text
    # The mock thinks half of its 20 output tokens; output_tokens counts them.
    assert message.usage.output_tokens == 20


async def test_a_streamed_answer_carries_the_same_thinking_block(
    claude: anthropic.AsyncAnthropic,
) -> None:
    ask: Any = {
        "model": "claude-sonnet-4",
        "max_tokens": 2048,
        "thinking": THINK,
        "messages": [{"role": "user", "content": "Think first"}],
    }
    whole = await claude.messages.create(**ask)
    async with claude.messages.stream(**ask) as stream:
        kinds = [e.type async for e in stream]
        streamed = await stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds  # thinking_delta, signature_delta
    assert [b.type for b in streamed.content] == ["thinking", "text"]
    assert streamed.content[0].model_dump() == whole.content[0].model_dump()
    assert streamed.usage.output_tokens == whole.usage.output_tokens


async def test_thinking_blocks_in_history_go_back_to_claude_first_and_unchanged(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    turn: Any = {"role": "user", "content": "Weather in Paris?"}
    ask: Any = {"model": "claude-sonnet-4", "max_tokens": 2048, "thinking": THINK}
    first = await claude.messages.create(**ask, tools=[WEATHER], messages=[turn])
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    history = [
        turn,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": first.content[1].id, "content": "sunny"}
            ],
        },
    ]
    # The mock refuses a tool-use turn that does not open with its (unchanged) thinking.
    second = await claude.messages.create(**ask, tools=[WEATHER], messages=history)
    assert second.content[-1].type == "text"
    assert sent[-1]["messages"][1]["content"][0] == first.content[0].model_dump()


async def test_redacted_thinking_comes_back_and_goes_back_as_it_was(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    turn: Any = {"role": "user", "content": REDACTED_TRIGGER}
    ask: Any = {"model": "claude-sonnet-4", "max_tokens": 2048, "thinking": THINK}
    first = await claude.messages.create(**ask, messages=[turn])
    redacted = first.content[0]
    assert redacted.type == "redacted_thinking" and redacted.data
    async with claude.messages.stream(**ask, messages=[turn]) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].model_dump() == redacted.model_dump()
    again = [
        turn,
        {"role": "assistant", "content": [redacted.model_dump(), first.content[1].model_dump()]},
    ]
    again.append({"role": "user", "content": "More"})
    await claude.messages.create(**ask, messages=again)
    assert sent[-1]["messages"][1]["content"][0] == redacted.model_dump()


async def test_a_thinking_budget_under_1024_is_anthropics_400(
    claude: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await claude.messages.create(
            model="claude-sonnet-4",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 100},
            messages=[{"role": "user", "content": "x"}],
        )
    assert "thinking.budget_tokens" in str(info.value)


async def test_claudes_thinking_is_counted_and_billed_as_reasoning(gw: Running) -> None:
    async with _openai(gw) as client:
        reply = await client.chat.completions.with_raw_response.create(
            model="claude-sonnet-4",
            max_tokens=2048,
            messages=[{"role": "user", "content": "Think"}],
            extra_body={"thinking": THINK},
        )
    completion = reply.parse()
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (20, 10)
    message: Any = completion.choices[0].message
    assert message.reasoning_content and message.thinking_blocks[0]["signature"]
    # claude-sonnet-4: $3 input, $15 output and reasoning per million tokens.
    cost = (usage.prompt_tokens * Decimal(3) + 20 * Decimal(15)) / 10**6
    assert Decimal(reply.headers["x-faregate-cost"]) == cost


# -- thinking elsewhere -------------------------------------------------------------------


async def test_thinking_reaches_gemini_as_a_thinking_config_and_its_thoughts_come_back(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    ask: Any = {
        "model": "gemini-2.5-flash",
        "max_tokens": 2048,
        "thinking": THINK,
        "messages": [{"role": "user", "content": "Think first"}],
    }
    message = await claude.messages.create(**ask)
    config = sent[-1]["generationConfig"]["thinkingConfig"]
    assert config == {"thinkingBudget": 1024, "includeThoughts": True}
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking and message.content[0].signature == ""
    async with claude.messages.stream(**ask) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].model_dump() == message.content[0].model_dump()


@pytest.mark.parametrize("model", ["gpt-4o-mini", "mistral-large"])
async def test_openai_wire_hosts_get_no_thinking_and_no_thinking_blocks(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]], model: str
) -> None:
    thought: Any = {"type": "thinking", "thinking": "hm", "signature": "c2ln"}
    await claude.messages.create(
        model=model,
        max_tokens=2048,
        thinking=THINK,
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [thought, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "c"},
        ],
    )
    assert "thinking" not in str(sent[-1])


# -- reasoning_effort and logprobs on /v1/chat/completions ----------------------------------


async def test_reasoning_effort_reaches_claude_as_a_thinking_budget(
    gw: Running, sent: list[dict[str, Any]]
) -> None:
    async with _openai(gw) as client:
        reply = await client.chat.completions.create(
            model="claude-sonnet-4",
            max_tokens=4096,
            reasoning_effort="medium",
            messages=[{"role": "user", "content": "Think"}],
        )
    assert sent[-1]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "reasoning_effort" not in sent[-1]
    usage = reply.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 10


async def test_reasoning_effort_reaches_gemini_as_a_thinking_budget(
    gw: Running, sent: list[dict[str, Any]]
) -> None:
    async with _openai(gw) as client:
        reply = await client.chat.completions.create(
            model="gemini-2.5-flash",
            reasoning_effort="low",
            messages=[{"role": "user", "content": "Think"}],
        )
    assert sent[-1]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}
    usage = reply.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 10


async def test_reasoning_effort_reaches_openai_as_sent(
    gw: Running, sent: list[dict[str, Any]]
) -> None:
    async with _openai(gw) as client:
        await client.chat.completions.create(
            model="gpt-4o-mini", reasoning_effort="low", messages=[{"role": "user", "content": "x"}]
        )
    assert sent[-1]["reasoning_effort"] == "low"


async def test_gemini_answers_logprobs_whole_and_streamed(
    gw: Running, sent: list[dict[str, Any]]
) -> None:
    ask: Any = {
        "model": "gemini-2.5-flash",
        "logprobs": True,
        "top_logprobs": 2,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    async with _openai(gw) as client:
        reply = await client.chat.completions.create(**ask)
        stream = await client.chat.completions.create(**ask, stream=True)
        chunks = [chunk async for chunk in stream]
    config = sent[0]["generationConfig"]
    assert (config["responseLogprobs"], config["logprobs"]) == (True, 2)
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content
    assert all(t.logprob < 0 and len(t.top_logprobs) == 2 for t in tokens)
    streamed = [
        t.token
        for chunk in chunks
        for c in chunk.choices
        if c.logprobs is not None and c.logprobs.content
        for t in c.logprobs.content
    ]
    assert "".join(streamed) == choice.message.content


@pytest.mark.parametrize("stream", [False, True])
async def test_logprobs_from_claude_are_openais_400_naming_the_parameter(
    gw: Running, stream: bool
) -> None:
    async with _openai(gw) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="claude-sonnet-4",
                logprobs=True,
                stream=stream,
                messages=[{"role": "user", "content": "x"}],
            )
    error = info.value
    assert error.status_code == 400 and error.param == "logprobs"
    assert error.code == "unsupported_parameter" and error.type == "invalid_request_error"


# -- one-hour prompt caching ----------------------------------------------------------------


async def test_one_hour_cache_writes_come_back_apart_and_cost_twice_input(
    gw: Running, claude: anthropic.AsyncAnthropic
) -> None:
    hour: Any = {"type": "ephemeral", "ttl": "1h"}
    turn: Any = {
        "role": "user",
        "content": [{"type": "text", "text": "h" * 8000, "cache_control": hour}],
    }
    ask: Any = {"model": "claude-sonnet-4", "max_tokens": 5, "messages": [turn]}
    first = await claude.messages.with_raw_response.create(**ask)
    usage = (await first.parse()).usage
    assert usage.cache_creation_input_tokens == 1024 and usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_1h_input_tokens == 1024
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    # claude-sonnet-4: $3 input, $6 one-hour cache writes (not the 5-minute $3.75), $15 output.
    cost = (980 * Decimal(3) + 1024 * Decimal(6) + 5 * Decimal(15)) / 10**6
    assert Decimal(first.headers["x-faregate-cost"]) == cost
    turn["content"][0]["text"] = "i" * 8000  # a prompt not cached yet
    # Streamed, message_delta restates the split (the SDK's snapshot takes it from
    # message_start: tests/gateway/test_sdk_stream_usage.py).
    async with claude.messages.stream(**ask) as stream:
        deltas = [e async for e in stream if e.type == "message_delta"]
    lifetimes = deltas[0].usage.to_dict()["cache_creation"]  # type: ignore[typeddict-item]
    assert lifetimes == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1024}
