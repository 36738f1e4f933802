"""The inbound Anthropic translation: Messages requests to OpenAI chat bodies and back,
checked against the official `anthropic` SDK talking to a loopback server."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web

from faregate.api.anthropic_answer import StreamTranslator, error_body, response_from_openai
from faregate.api.anthropic_wire import request_to_openai
from faregate.errors import InvalidRequest
from faregate.providers.shape import FROM_MESSAGES_API
from faregate.usage import Usage

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}

TOOL_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{\n"location": "Boston, MA"\n}',
                        },
                    }
                ],
            },
        }
    ],
    "usage": {
        "prompt_tokens": 1082,
        "completion_tokens": 17,
        "total_tokens": 1099,
        "prompt_tokens_details": {"cached_tokens": 1024},
    },
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1699896916,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


TOOL_CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Let me "}),
    _chunk({"content": "check."}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{\n"location"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Boston, MA"\n}'}}]}),
    _chunk({}, "tool_calls"),
    {**_chunk({}), "choices": [], "usage": TOOL_COMPLETION["usage"]},
]
USAGE = Usage(input_tokens=1082, output_tokens=17, cached_input_tokens=1024)


# -- requests ------------------------------------------------------------------------


def test_a_messages_request_becomes_an_openai_chat_body() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
                    {"type": "text", "text": "Weather where this was taken?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"location": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "content": [{"type": "text", "text": "21C"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 5,
        "stream": True,
        "metadata": {"user_id": "user-7"},
    }
    assert request_to_openai(body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [
            {
                "role": "system",
                "content": [
                    {
                        "type": "text",
                        "text": "You are terse.",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}},
                    {"type": "text", "text": "Weather where this was taken?"},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01", "content": "21C"},
            {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER["input_schema"],
                    "description": WEATHER["description"],
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": ["\n\nHuman:"],
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-7",
        FROM_MESSAGES_API: True,
    }


def test_text_blocks_stay_apart_as_text_parts() -> None:
    texts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": texts,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": texts},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": texts}],
            },
        ],
    }
    system, _, assistant, tool = request_to_openai(body)["messages"]
    assert system == {"role": "system", "content": texts}
    assert assistant == {"role": "assistant", "content": texts}
    assert tool == {"role": "tool", "tool_call_id": "t", "content": texts}


@pytest.mark.parametrize(
    ("choice", "mapped"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
    ],
)
def test_tool_choice_maps_to_openai(choice: dict[str, Any], mapped: dict[str, Any]) -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [WEATHER],
        "tool_choice": choice,
    }
    translated = request_to_openai(body)
    assert {k: translated[k] for k in mapped} == mapped


@pytest.mark.parametrize(
    ("broken", "param"),
    [
        ({"model": None}, "model"),
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        # Each of these reached the translation and failed it (a 500).
        ({"system": 5}, "system"),
        ({"metadata": 5}, "metadata"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
            "messages[0].content[0].source",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f"}],
                    },
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}],
                    },
                ]
            },
            "messages[2].content[0].content",
        ),
    ],
)
def test_required_fields_are_validated(broken: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    body.update(broken)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(InvalidRequest) as info:
        request_to_openai(body)
    assert info.value.param == param and info.value.status == 400


# -- the official SDK against a loopback server ----------------------------------------


class Loopback:
    """Answers /v1/messages like the gateway would, from canned OpenAI-shaped answers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.error: tuple[int, str] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(request_to_openai(body))
        if self.error:
            status, message = self.error
            return web.json_response(error_body(status, message), status=status)
        if not body.get("stream"):
            return web.json_response(
                response_from_openai(copy.deepcopy(TOOL_COMPLETION), body["model"])
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        translator = StreamTranslator(body["model"])
        events = [e for c in TOOL_CHUNKS for e in translator.feed(c)]
        for name, data in events + translator.finish(USAGE, "tool_calls"):
            await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def loopback() -> AsyncIterator[tuple[Loopback, anthropic.AsyncAnthropic]]:
    server = Loopback()
    app = web.Application()
    app.router.add_post("/v1/messages", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{port}", api_key="sk-test", max_retries=0
    )
    try:
        yield server, client
    finally:
        await client.close()
        await runner.cleanup()


async def test_the_sdk_reads_a_translated_message(loopback: Any) -> None:
    server, client = loopback
    message = await client.messages.create(
        model="claude-public",
        max_tokens=256,
        tools=[WEATHER],
        system="Be brief.",
        messages=[{"role": "user", "content": "Weather in Boston?"}],
    )
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]


async def test_the_sdk_assembles_a_translated_stream_into_the_same_message(loopback: Any) -> None:
    _, client = loopback
    kwargs: dict[str, Any] = {
        "model": "claude-public",
        "max_tokens": 256,
        "tools": [WEATHER],
        "messages": [{"role": "user", "content": "Weather in Boston?"}],
    }
    whole = await client.messages.create(**kwargs)
    async with client.messages.stream(**kwargs) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        streamed = await stream.get_final_message()
    assert text == "Let me check."

    def blocks(message: Any) -> list[dict[str, Any]]:
        return [b.model_dump(exclude={"parsed_output"}) for b in message.content]

    assert blocks(streamed) == blocks(whole)
    assert streamed.stop_reason == whole.stop_reason == "tool_use"
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    assert streamed.usage.input_tokens == whole.usage.input_tokens
    assert streamed.usage.cache_read_input_tokens == whole.usage.cache_read_input_tokens


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (502, anthropic.InternalServerError),
    ],
)
async def test_error_bodies_raise_the_sdks_exception(
    loopback: Any, status: int, exception: type[Exception]
) -> None:
    server, client = loopback
    server.error = (status, "nope")
    with pytest.raises(exception) as info:
        await client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    body = info.value.body  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["message"] == "nope"
