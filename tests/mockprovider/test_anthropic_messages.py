"""Anthropic Messages, driven by the official SDK and checked against the raw event stream."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import pytest

from faregate.mockprovider import MockServer, count_tokens

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


async def raw_events(
    http: aiohttp.ClientSession, mock: MockServer, body: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    async with http.post(mock.url + "/v1/messages", json=body, headers=HEADERS) as resp:
        assert resp.status == 200
        text = await resp.text()
    events = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        events.append((name_line.removeprefix("event: "), json.loads(data_line[6:])))
    return events


async def test_message_has_text_stop_reason_and_usage(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    message = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=100, system="Be brief.", messages=USER
    )
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == "claude-haiku-4-5"
    assert message.content[0].type == "text"
    assert len(message.content[0].text.split()) == 20
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    expected = count_tokens("Be brief.") + count_tokens(USER[0]["content"]) + 8
    assert message.usage.input_tokens == expected
    assert message.usage.output_tokens == 20
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0


async def test_max_tokens_and_stop_sequences_set_the_stop_reason(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    short = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=4, messages=USER
    )
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 4
    stopped = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=100, messages=USER, stop_sequences=[" dolor"]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == " dolor"
    assert stopped.content[0].text == "Lorem ipsum" and stopped.usage.output_tokens == 2


async def test_stream_emits_the_documented_event_sequence(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 3, "messages": USER, "stream": True}
    events = await raw_events(http, mock, body)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert events[3][1]["delta"] == {"type": "text_delta", "text": "Lorem"}
    assert events[-2][1]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    # Cumulative, as the API reports it: the input counts restated with the whole output.
    assert events[-2][1]["usage"] == {
        "input_tokens": start["usage"]["input_tokens"],
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 3,
    }


async def test_streamed_and_whole_messages_report_identical_usage(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    kwargs: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 9, "messages": USER}
    whole = await anthropic_client.messages.create(**kwargs)
    async with anthropic_client.messages.stream(**kwargs) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].text == whole.content[0].text
    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.output_tokens == whole.usage.output_tokens == 9
    assert streamed.stop_reason == whole.stop_reason == "max_tokens"


async def test_tools_yield_tool_use_and_stream_as_input_json_deltas(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    kwargs: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": USER,
        "tools": [WEATHER_TOOL],
    }
    whole = await anthropic_client.messages.create(**kwargs)
    [block] = whole.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_")
    assert block.input == {"city": "mock", "days": 1}
    assert whole.stop_reason == "tool_use"
    async with anthropic_client.messages.stream(**kwargs) as stream:
        streamed = await stream.get_final_message()
    assert streamed.content[0].input == block.input and streamed.content[0].id == block.id
    assert streamed.stop_reason == "tool_use"
    assert streamed.usage.output_tokens == whole.usage.output_tokens


async def test_after_a_tool_result_the_reply_is_text(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    messages: list[dict[str, Any]] = [
        *USER,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
        },
    ]
    reply = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=50, messages=messages, tools=[WEATHER_TOOL]
    )
    assert reply.content[0].type == "text" and reply.stop_reason == "end_turn"


async def test_a_breakpoint_writes_the_cache_once_and_reads_it_after(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    """Cache writes and reads are both outside input_tokens, as Anthropic counts them."""
    long = [{"type": "text", "text": "y" * 8000, "cache_control": {"type": "ephemeral"}}]
    ask = {"model": "claude-haiku-4-5", "max_tokens": 5}
    first = await anthropic_client.messages.create(
        **ask, messages=[{"role": "user", "content": long}]
    )
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (
        1024,
        0,
    )
    assert first.usage.input_tokens == 2004 - 1024
    async with anthropic_client.messages.stream(
        **ask, messages=[{"role": "user", "content": long}]
    ) as stream:
        again = await stream.get_final_message()
    assert (again.usage.cache_creation_input_tokens, again.usage.cache_read_input_tokens) == (
        0,
        1024,
    )
    assert again.usage.input_tokens == 2004 - 1024


async def test_a_prompt_without_a_breakpoint_is_not_cached(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    for _ in range(2):
        reply = await anthropic_client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "y" * 8000}],
        )
        assert (reply.usage.cache_read_input_tokens, reply.usage.input_tokens) == (0, 2004)


async def test_count_tokens_matches_message_input(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    counted = await anthropic_client.messages.count_tokens(model="claude-haiku-4-5", messages=USER)
    reply = await anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=5, messages=USER
    )
    assert counted.input_tokens == reply.usage.input_tokens


async def test_missing_max_tokens_is_an_invalid_request_error(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "claude-haiku-4-5", "messages": USER}
    async with http.post(mock.url + "/v1/messages", json=body, headers=HEADERS) as resp:
        assert resp.status == 400
        payload = await resp.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in payload["error"]["message"]


async def test_missing_anthropic_version_header_is_refused(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": USER}
    async with http.post(mock.url + "/v1/messages", json=body, headers={"x-api-key": "k"}) as resp:
        assert resp.status == 400


async def test_context_marker_is_refused_as_prompt_too_long(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await anthropic_client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "context_length_exceeded"}],
        )
    assert "prompt is too long" in caught.value.body["error"]["message"]


async def test_output_config_format_answers_json_that_fits_the_schema(
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    reply = await anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        messages=USER,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert reply.content[0].type == "text"
    assert json.loads(reply.content[0].text) == {"city": "mock", "days": 1}
    assert reply.stop_reason == "end_turn"
    with pytest.raises(anthropic.BadRequestError):
        await anthropic_client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=USER,
            output_config={"format": {"type": "json_object"}},  # type: ignore[typeddict-item]
        )
