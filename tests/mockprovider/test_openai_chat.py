"""OpenAI chat completions, driven by the official SDK and checked against raw SSE."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest

from faregate.mockprovider import MockServer, count_tokens

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}


def expected_prompt_tokens(*texts: str) -> int:
    return sum(count_tokens(t) + 4 for t in texts)


async def raw_sse(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> list[str]:
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    return [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]


async def test_completion_reports_counted_prompt_and_default_output_tokens(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.chat.completions.create(model="gpt-4o", messages=USER)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == "gpt-4o"
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.refusal is None
    assert len(choice.message.content.split()) == 20
    assert reply.usage.prompt_tokens == expected_prompt_tokens(USER[0]["content"])
    assert reply.usage.completion_tokens == 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 20
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0
    assert reply.system_fingerprint


async def test_max_tokens_truncates_reply_with_finish_reason_length(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, max_completion_tokens=5
    )
    assert reply.choices[0].finish_reason == "length"
    assert len(reply.choices[0].message.content.split()) == 5
    assert reply.usage.completion_tokens == 5
    legacy = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, max_tokens=3
    )
    assert legacy.usage.completion_tokens == 3


async def test_stream_and_whole_reply_report_identical_usage_and_text(
    openai_client: openai.AsyncOpenAI,
) -> None:
    whole = await openai_client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=7)
    stream = await openai_client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(content) == 7  # one content chunk per output token
    assert "".join(content) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_include_usage_has_no_usage_key_and_ends_with_done(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"model": "gpt-4o", "messages": USER, "stream": True, "max_tokens": 2}
    events = await raw_sse(http, mock.url + "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    body["stream_options"] = {"include_usage": True}
    events = await raw_sse(http, mock.url + "/v1/chat/completions", body)
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


async def test_n_returns_that_many_choices_and_bills_each(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, n=3, max_tokens=4
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.message.content for c in reply.choices}) == 3
    assert reply.usage.completion_tokens == 12
    stream = await openai_client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        n=3,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1, 2}
    assert chunks[-1].usage.completion_tokens == 12


async def test_stop_sequence_cuts_reply_and_counts_only_tokens_sent(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.chat.completions.create(model="gpt-4o", messages=USER, stop=" sit")
    assert reply.choices[0].message.content == "Lorem ipsum dolor"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 3


async def test_tools_with_user_last_yield_one_deterministic_tool_call(
    openai_client: openai.AsyncOpenAI,
) -> None:
    first = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]
    )
    again = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_") and call.id == again.choices[0].message.tool_calls[0].id
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}


async def test_tool_parameters_that_are_no_object_answer_400_as_openai_does(
    openai_client: openai.AsyncOpenAI,
) -> None:
    # It used to be the mock's own 500, which the gateway took for an outage.
    tool = {"type": "function", "function": {"name": "f", "parameters": 5}}
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(
            model="gpt-4o",
            messages=USER,
            tools=[tool],  # type: ignore[list-item]
        )
    assert caught.value.body["param"] == "tools[0].function.parameters"


async def test_a_malformed_schema_deep_inside_still_gets_a_placeholder_call(
    openai_client: openai.AsyncOpenAI,
) -> None:
    parameters = {
        "type": "object",
        "properties": {"a": 5, "b": {"enum": {"x": 1}}, "c": {"type": "array", "minItems": "2"}},
        "required": ["a", "b", "c", 7],
    }
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    reply = await openai_client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[tool],  # type: ignore[list-item]
    )
    [call] = reply.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"a": "mock", "b": "mock", "c": []}


async def test_streamed_tool_call_fragments_reassemble_to_the_same_call(
    openai_client: openai.AsyncOpenAI,
) -> None:
    whole = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]
    )
    stream = await openai_client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    fragments = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert fragments[0].index == 0 and fragments[0].type == "function"
    assert fragments[0].id == whole.choices[0].message.tool_calls[0].id
    assert fragments[0].function.name == "get_weather"
    assert all(f.id is None for f in fragments[1:])
    arguments = "".join(f.function.arguments for f in fragments)
    assert arguments == whole.choices[0].message.tool_calls[0].function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


async def test_after_a_tool_result_the_reply_is_text(openai_client: openai.AsyncOpenAI) -> None:
    messages: list[dict[str, Any]] = [
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
    ]
    reply = await openai_client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content


async def test_tool_choice_none_answers_with_text(openai_client: openai.AsyncOpenAI) -> None:
    reply = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert reply.choices[0].message.tool_calls is None


async def test_json_modes_reply_with_a_json_object(openai_client: openai.AsyncOpenAI) -> None:
    loose = await openai_client.chat.completions.create(
        model="gpt-4o", messages=USER, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(loose.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    strict = await openai_client.chat.completions.create(
        model="gpt-4o",
        messages=USER,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        },
    )
    assert set(json.loads(strict.choices[0].message.content)) == {"answer", "score"}


async def test_reasoning_models_report_half_of_output_as_reasoning(
    openai_client: openai.AsyncOpenAI,
) -> None:
    reply = await openai_client.chat.completions.create(
        model="o3-mini", messages=USER, max_completion_tokens=10
    )
    assert reply.usage.completion_tokens == 10
    assert reply.usage.completion_tokens_details.reasoning_tokens == 5
    assert len(reply.choices[0].message.content.split()) == 5


async def test_long_prompts_report_1024_cached_tokens(openai_client: openai.AsyncOpenAI) -> None:
    long_text = "x" * 8000
    reply = await openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": long_text}]
    )
    assert reply.usage.prompt_tokens == 2004
    assert reply.usage.prompt_tokens_details.cached_tokens == 1024


async def test_system_and_image_parts_count_into_prompt_tokens(
    openai_client: openai.AsyncOpenAI,
) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    reply = await openai_client.chat.completions.create(model="gpt-4o", messages=messages)
    assert reply.usage.prompt_tokens == expected_prompt_tokens("Be brief.", "Describe this.") + 85


async def test_context_marker_is_refused_as_context_length_exceeded(
    openai_client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "context_length_exceeded"}]
        )
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.body["type"] == "invalid_request_error"


async def test_missing_or_invalid_fields_answer_400_in_openai_shape(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/v1/chat/completions"
    cases = [
        ({"messages": USER}, "model"),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0]"),
    ]
    for body, param in cases:
        async with http.post(url, json=body) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "invalid_request_error" and error["param"] == param
    async with http.post(url, data=b"{not json") as resp:
        assert resp.status == 400
