"""Anthropic adapter mapping on wire examples from Anthropic's Messages API reference."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from faregate.providers.anthropic import (
    StreamParser,
    chat_result,
    parse_error,
    usage_from_anthropic,
)
from faregate.providers.anthropic_request import messages_request
from faregate.providers.base import ProviderError, StreamState
from tests.providers.wire import offline, run_sse

PNG = "iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}

TOOL_USE_RESPONSE: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-opus-4-1-20250805",
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "content": [
        {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ],
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 2051,
        "cache_read_input_tokens": 1000,
    },
}

# The tool-use streaming example from Anthropic's streaming guide.
STREAM = """\
event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-1-20250805","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", let's check"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \\"San Francisco, CA\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def _request(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return messages_request(
        body,
        "claude-sonnet-4-5",
        default_max_tokens=kw.get("max", 4096),
        stream=kw.get("stream", False),
    )


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    request = _request(
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hello"},
            ],
            "max_tokens": 100,
            "stop": "END",
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-42",
        }
    )
    assert request == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in French."},
        ],
        "messages": [{"role": "user", "content": "Hello"}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"user_id": "u-42"},
    }


def test_max_tokens_defaults_from_the_endpoint_and_max_completion_tokens_wins() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    assert _request(body, max=1234)["max_tokens"] == 1234
    assert _request({**body, "max_tokens": 5, "max_completion_tokens": 7})["max_tokens"] == 7


def test_images_become_base64_or_url_sources() -> None:
    request = _request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in these?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ]
        }
    )
    assert request["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_calls_and_consecutive_tool_results_map_to_blocks() -> None:
    request = _request(
        {
            "messages": [
                {"role": "user", "content": "Weather in SF and NYC?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "NYC"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
                {
                    "role": "tool",
                    "tool_call_id": "toolu_2",
                    "content": [{"type": "text", "text": "20"}],
                },
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    )
    assert request["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "SF"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"location": "NYC"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "20"}],
                },
            ],
        },
    ]
    assert request["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert request["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("choice", "mapped"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_maps_to_anthropic(choice: Any, mapped: dict[str, Any]) -> None:
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": choice,
    }
    assert _request(body)["tool_choice"] == mapped


def test_a_json_schema_response_format_becomes_structured_output() -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    spec = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    request = _request({"messages": [{"role": "user", "content": "Hi"}], "response_format": spec})
    assert request["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    text = _request({"messages": [{"role": "user", "content": "Hi"}], "response_format": {}})
    assert "output_config" not in text


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ({"type": "json_object"}, "response_format.type"),
        (
            {"type": "json_schema", "json_schema": {"name": "x"}},
            "response_format.json_schema.schema",
        ),
    ],
)
def test_json_output_without_a_schema_is_refused(spec: dict[str, Any], param: str) -> None:
    with pytest.raises(ProviderError) as refused:
        _request({"messages": [{"role": "user", "content": "Hi"}], "response_format": spec})
    assert (refused.value.status, refused.value.param) == (400, param)


def test_more_than_one_choice_is_a_client_error() -> None:
    with pytest.raises(ProviderError) as info:
        _request({"messages": [{"role": "user", "content": "Hi"}], "n": 2})
    assert (info.value.status, info.value.param, info.value.retryable) == (400, "n", False)


def test_bad_tool_arguments_are_a_client_error() -> None:
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{nope"}}
                ],
            }
        ]
    }
    with pytest.raises(ProviderError) as info:
        _request(body)
    assert info.value.param == "messages[0].tool_calls[0]"


def test_response_maps_text_tool_use_finish_reason_and_cache_usage() -> None:
    result = chat_result(TOOL_USE_RESPONSE)
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert (
        choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    )
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert orjson.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA"}
    assert (result.usage.input_tokens, result.usage.cached_input_tokens) == (5146, 1000)
    assert result.usage.cache_write_tokens == 2051
    assert result.body["usage"]["prompt_tokens"] == 5146
    assert result.body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1000
    assert result.body["usage"]["cache_creation_input_tokens"] == 2051


def test_cache_control_goes_on_tool_uses_tool_results_and_the_request() -> None:
    ephemeral = {"type": "ephemeral"}
    call = {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
        "cache_control": ephemeral,
    }
    request = _request(
        {
            "cache_control": ephemeral,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {
                    "role": "tool",
                    "tool_call_id": "toolu_1",
                    "content": "sunny",
                    "cache_control": ephemeral,
                },
            ],
        }
    )
    assert request["cache_control"] == ephemeral
    assert request["messages"][1]["content"][0]["cache_control"] == ephemeral
    assert request["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "sunny",
        "cache_control": ephemeral,
    }


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop: str, finish: str) -> None:
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": stop,
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }
    assert chat_result(data).body["choices"][0]["finish_reason"] == finish


def test_the_matched_stop_sequence_is_the_choices_stop_reason() -> None:
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "stop_sequence",
        "stop_sequence": "###",
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }
    choice = chat_result(data).body["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "###")
    stream = STREAM.replace(
        '"delta":{"stop_reason":"tool_use","stop_sequence":null}',
        '"delta":{"stop_reason":"stop_sequence","stop_sequence":"###"}',
    )
    assert stream != STREAM
    chunks = run_sse(
        StreamParser("claude", StreamState(), offline("anthropic", parse_error)), stream
    )
    finish = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [(c["finish_reason"], c.get("stop_reason")) for c in finish] == [("stop", "###")]


def test_thinking_tokens_are_reasoning_tokens() -> None:
    usage = usage_from_anthropic(
        {"input_tokens": 5, "output_tokens": 40, "output_tokens_details": {"thinking_tokens": 30}}
    )
    assert (usage.output_tokens, usage.reasoning_tokens) == (40, 30)


def test_stream_becomes_openai_chunks_with_tool_call_fragments() -> None:
    state = StreamState()
    chunks = run_sse(StreamParser("claude", state, offline("anthropic", parse_error)), STREAM)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Okay, let's check"
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == {"location": "San Francisco, CA"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 89
    assert state.usage is not None and (state.usage.input_tokens, state.usage.output_tokens) == (
        472,
        89,
    )
    assert state.finish_reason == "tool_calls"
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}


def test_a_stream_without_message_stop_is_cut() -> None:
    with pytest.raises(ProviderError) as info:
        run_sse(
            StreamParser("claude", StreamState(), offline("anthropic", parse_error)),
            STREAM.split("event: message_delta")[0],
        )
    assert info.value.code == "upstream_disconnected"


def test_an_overloaded_error_event_is_a_retryable_503() -> None:
    text = STREAM.split("event: content_block_stop")[0] + (
        'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        '"message": "Overloaded"}}\n\n'
    )
    with pytest.raises(ProviderError) as info:
        run_sse(StreamParser("claude", StreamState(), offline("anthropic", parse_error)), text)
    assert (info.value.status, info.value.retryable) == (503, True)


def test_error_body_message_is_read() -> None:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    assert parse_error(body).message == "bad"


def test_a_prompt_too_long_is_openais_context_length_exceeded() -> None:
    body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 208310 tokens > 200000 maximum",
        },
    }
    detail = parse_error(body)
    assert (detail.code, detail.param) == ("context_length_exceeded", "messages")
    other = parse_error(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "x"}}
    )
    assert (other.code, other.param) == (None, None)
