"""Anthropic extended thinking in the mock, driven by the official SDK: thinking blocks with
signatures (streamed as thinking and signature deltas), redacted thinking, the Messages
API's checks of a thinking request, and its checks of thinking passed back in history."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from faregate.mockprovider.anthropic_thinking import REDACTED_TRIGGER

USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
THINK: Any = {"type": "enabled", "budget_tokens": 1024}
TOOL: Any = {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}


async def test_a_thinking_request_opens_its_answer_with_a_signed_thinking_block(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    message = await anthropic_client.messages.create(
        model="claude-sonnet-4", max_tokens=2048, thinking=THINK, messages=USER
    )
    thought, text = message.content
    assert thought.type == "thinking" and len(thought.thinking.split()) == 10
    assert len(thought.signature) > 200 and text.type == "text"
    assert message.usage.output_tokens == 20
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 10


async def test_without_thinking_claude_does_not_think(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    for thinking in (None, {"type": "disabled"}):
        extra: Any = {"thinking": thinking} if thinking else {}
        message = await anthropic_client.messages.create(
            model="claude-reasoning", max_tokens=2048, messages=USER, **extra
        )
        assert [b.type for b in message.content] == ["text"]


async def test_omitted_thinking_keeps_only_its_signature_and_streams_alike(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    ask: Any = {
        "model": "claude-sonnet-4",
        "max_tokens": 2048,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "messages": USER,
    }
    whole = await anthropic_client.messages.create(**ask)
    assert whole.content[0].type == "thinking" and whole.content[0].thinking == ""
    async with anthropic_client.messages.stream(**ask) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].model_dump() == whole.content[0].model_dump()


async def test_the_redacted_thinking_trigger_answers_with_redacted_thinking(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    message = await anthropic_client.messages.create(
        model="claude-sonnet-4",
        max_tokens=2048,
        thinking=THINK,
        messages=[{"role": "user", "content": REDACTED_TRIGGER}],
    )
    assert message.content[0].type == "redacted_thinking" and message.content[0].data


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "message"),
    [
        ({"type": "enabled", "budget_tokens": 1000}, 2048, "greater than or equal to 1024"),
        ({"type": "enabled", "budget_tokens": 2048}, 2048, "must be greater than"),
        ({"type": "enabled"}, 2048, "budget_tokens: Field required"),
        ({"type": "sometimes"}, 2048, "does not match any of the expected tags"),
    ],
)
async def test_a_malformed_thinking_request_is_a_400(
    anthropic_client: anthropic.AsyncAnthropic, thinking: Any, max_tokens: int, message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        await anthropic_client.messages.create(
            model="claude-sonnet-4", max_tokens=max_tokens, thinking=thinking, messages=USER
        )
    assert message in str(info.value)


async def _tool_turn(client: anthropic.AsyncAnthropic) -> list[dict[str, Any]]:
    first = await client.messages.create(
        model="claude-sonnet-4", max_tokens=2048, thinking=THINK, tools=[TOOL], messages=USER
    )
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    return [b.model_dump() for b in first.content]


def _history(content: list[dict[str, Any]]) -> Any:
    result = {"type": "tool_result", "tool_use_id": content[-1]["id"], "content": "sunny"}
    return [*USER, {"role": "assistant", "content": content}, {"role": "user", "content": [result]}]


async def test_thinking_passed_back_unchanged_continues_the_tool_use(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    content = await _tool_turn(anthropic_client)
    message = await anthropic_client.messages.create(
        model="claude-sonnet-4",
        max_tokens=2048,
        thinking=THINK,
        tools=[TOOL],
        messages=_history(content),
    )
    assert message.content[-1].type == "text"


async def test_an_altered_or_missing_thinking_block_is_refused(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    content = await _tool_turn(anthropic_client)
    altered = [{**content[0], "thinking": content[0]["thinking"] + "!"}, content[1]]
    for history, error in (
        (_history(altered), "Invalid `signature`"),
        (_history(content[1:]), "must start with a thinking block"),
    ):
        with pytest.raises(anthropic.BadRequestError) as info:
            await anthropic_client.messages.create(
                model="claude-sonnet-4",
                max_tokens=2048,
                thinking=THINK,
                tools=[TOOL],
                messages=history,
            )
        assert error in str(info.value)


@pytest.mark.parametrize(
    ("sampling", "named"),
    [
        ({"temperature": 0.5}, "`temperature` may only be set to 1"),
        ({"top_k": 5}, "`top_k` must be unset"),
        ({"top_p": 0.9}, "`top_p` must be greater than or equal to 0.95"),
    ],
)
@pytest.mark.parametrize("thinking", [THINK, {"type": "adaptive"}])
async def test_thinking_refuses_the_sampling_claude_refuses_in_anthropics_error_shape(
    anthropic_client: anthropic.AsyncAnthropic,
    thinking: Any,
    sampling: dict[str, Any],
    named: str,
) -> None:
    # The SDK no longer names sampling fields (API versions after 2023-06-01 refuse them).
    ask: Any = {"model": "claude-sonnet-4", "max_tokens": 2048, "messages": USER}
    with pytest.raises(anthropic.BadRequestError) as info:
        await anthropic_client.messages.create(**ask, thinking=thinking, extra_body=sampling)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": info.value.body["error"]["message"]},
    }
    assert info.value.body["error"]["message"].startswith(named)
    # The same sampling without thinking, and what thinking takes, are answered.
    await anthropic_client.messages.create(**ask, extra_body=sampling)
    taken = {"temperature": 1, "top_p": 0.95}
    await anthropic_client.messages.create(**ask, thinking=thinking, extra_body=taken)


async def test_output_config_effort_takes_anthropics_levels(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    ask: Any = {"model": "claude-sonnet-4", "max_tokens": 2048, "messages": USER}
    for effort in ("low", "medium", "high", "xhigh", "max"):
        await anthropic_client.messages.create(**ask, output_config={"effort": effort})
    with pytest.raises(anthropic.BadRequestError) as info:
        await anthropic_client.messages.create(**ask, output_config={"effort": "extreme"})  # type: ignore[typeddict-item]
    assert "output_config.effort" in str(info.value)
