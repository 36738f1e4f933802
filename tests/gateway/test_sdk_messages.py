"""What `/v1/messages` carries to each upstream and back, driven by the official anthropic
and openai SDKs against the gateway in front of the mock provider (SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from pydantic import BaseModel

from faregate.mockprovider.config import MockBehaviour
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


async def test_text_blocks_reach_openai_wire_hosts_as_paragraphs_of_one_string(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    """A string: many OpenAI-compatible hosts (DeepSeek) refuse content as a list."""
    await claude.messages.create(
        model="gpt-4o-mini", max_tokens=5, system=TWO_BLOCKS, messages=HISTORY
    )
    system, _, assistant, _ = sent[-1]["messages"]
    assert system == {"role": "system", "content": "sys1\n\nsys2"}
    assert assistant["content"] == "one\n\ntwo"


async def test_text_blocks_reach_gemini_as_parts(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    await claude.messages.create(
        model="gemini-2.5-flash", max_tokens=5, system=TWO_BLOCKS, messages=HISTORY
    )
    assert sent[-1]["systemInstruction"] == {"parts": [{"text": "sys1"}, {"text": "sys2"}]}
    assert sent[-1]["contents"][1] == {"role": "model", "parts": [{"text": "one"}, {"text": "two"}]}


# -- prompt caching ----------------------------------------------------------------------

EPHEMERAL = {"type": "ephemeral"}
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "cache_control": EPHEMERAL,
}
CACHED_TURNS: Any = [
    {"role": "user", "content": [{"type": "text", "text": "y" * 8000, "cache_control": EPHEMERAL}]},
    {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": "sunny",
                "cache_control": EPHEMERAL,
            }
        ],
    },
]


async def test_cache_control_reaches_claude_wherever_the_client_put_it(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    await claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=5,
        system=[{"type": "text", "text": "sys", "cache_control": EPHEMERAL}],
        tools=[WEATHER],
        messages=CACHED_TURNS,
        extra_body={"cache_control": EPHEMERAL},
    )
    body = sent[-1]
    assert body["cache_control"] == EPHEMERAL
    assert body["system"] == [{"type": "text", "text": "sys", "cache_control": EPHEMERAL}]
    assert body["tools"][0]["cache_control"] == EPHEMERAL
    assert body["messages"][0]["content"][0]["cache_control"] == EPHEMERAL
    assert body["messages"][2]["content"][0]["cache_control"] == EPHEMERAL


@pytest.mark.parametrize("model", ["gpt-4o-mini", "mistral-large"])
async def test_openai_wire_hosts_get_no_anthropic_fields(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]], model: str
) -> None:
    await claude.messages.create(
        model=model,
        max_tokens=5,
        system=[{"type": "text", "text": "sys", "cache_control": EPHEMERAL}],
        tools=[WEATHER],
        messages=CACHED_TURNS,
        extra_body={"cache_control": EPHEMERAL},
    )
    assert "cache_control" not in str(sent[-1]) and "faregate" not in str(sent[-1])
    assert sent[-1]["messages"][0] == {"role": "system", "content": "sys"}


async def test_cache_writes_and_reads_come_back_apart_and_cost_their_own_rates(
    gw: Running, claude: anthropic.AsyncAnthropic
) -> None:
    ask: Any = {"model": "claude-sonnet-4", "max_tokens": 5, "messages": CACHED_TURNS[:1]}
    first = await claude.messages.with_raw_response.create(**ask)
    usage = (await first.parse()).usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (1024, 0)
    assert (usage.input_tokens, usage.output_tokens) == (2004 - 1024, 5)
    # claude-sonnet-4: $3 input, $3.75 cache writes, $0.30 cached input, $15 output per
    # million tokens.
    cost = (980 * Decimal(3) + 1024 * Decimal("3.75") + 5 * Decimal(15)) / 10**6
    assert Decimal(first.headers["x-faregate-cost"]) == cost == Decimal("0.006855")
    async with claude.messages.stream(**ask) as stream:
        again = (await stream.get_final_message()).usage
    assert (again.cache_creation_input_tokens, again.cache_read_input_tokens) == (0, 1024)
    assert again.input_tokens == 2004 - 1024
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with client:
        reply = await client.chat.completions.create(
            model="claude-sonnet-4",
            max_tokens=5,
            messages=[{"role": "user", "content": "z" * 8000}],
        )
    assert reply.usage is not None and reply.usage.prompt_tokens == 2004


# -- structured outputs ------------------------------------------------------------------


class City(BaseModel):
    name: str
    population: int


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-4o-mini", "gemini-2.5-flash"])
async def test_messages_parse_gets_schema_conforming_json_from_any_upstream(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]], model: str
) -> None:
    message = await claude.messages.parse(
        model=model, max_tokens=50, messages=HELLO, output_format=City
    )
    assert message.parsed_output == City(name="mock", population=1)
    body = sent[-1]
    schema = {"output_config", "response_format", "generationConfig"} & body.keys()
    assert len(schema) == 1  # Claude: output_config; OpenAI: response_format; Gemini: config
    async with claude.messages.stream(
        model=model, max_tokens=50, messages=HELLO, output_format=City
    ) as stream:
        final = await stream.get_final_message()
    assert final.parsed_output == City(name="mock", population=1)


async def test_the_deprecated_output_format_field_still_works(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    message = await claude.messages.create(
        model="claude-sonnet-4",
        max_tokens=50,
        messages=HELLO,
        extra_body={"output_format": {"type": "json_schema", "schema": schema}},
    )
    assert message.content[0].type == "text" and message.content[0].text == '{"name":"mock"}'
    assert sent[-1]["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


async def test_openai_parse_through_a_claude_model_gets_json(gw: Running) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with client:
        reply = await client.chat.completions.parse(
            model="claude-sonnet-4", messages=HELLO, response_format=City, max_tokens=50
        )
        assert reply.choices[0].message.parsed == City(name="mock", population=1)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="claude-sonnet-4",
                messages=HELLO,
                response_format={"type": "json_object"},
                max_tokens=50,
            )
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["param"] == "response_format.type"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
        ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
        ({"output_config": "json"}, "output_config"),
    ],
)
async def test_a_malformed_output_format_is_anthropics_400(
    claude: anthropic.AsyncAnthropic, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(
            model="claude-sonnet-4", max_tokens=5, messages=HELLO, extra_body=extra
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(param)


# -- context-window errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "deployment"), [("claude-sonnet-4", "anthropic"), ("gemini-2.5-flash", "gemini")]
)
async def test_a_prompt_over_the_context_window_is_openais_context_length_exceeded(
    gw: Running, mock: MockServer, model: str, deployment: str
) -> None:
    mock.config.deployments[deployment] = MockBehaviour(context_window=3)
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    long = [{"role": "user", "content": "a prompt longer than three tokens"}]
    async with client:
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model=model, messages=long, stream=stream)
            assert (refused.value.code, refused.value.param) == (
                "context_length_exceeded",
                "messages",
            )


# -- request ids and unknown paths -------------------------------------------------------


async def test_answers_carry_the_request_id_the_sdk_reads(claude: anthropic.AsyncAnthropic) -> None:
    message = await claude.messages.create(model="claude-sonnet-4", max_tokens=5, messages=HELLO)
    assert message._request_id and message._request_id.startswith("req_")
    async with claude.messages.stream(
        model="claude-sonnet-4", max_tokens=5, messages=HELLO
    ) as stream:
        assert stream.request_id == stream.response.headers["x-faregate-request-id"]
        await stream.get_final_message()


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_an_unknown_messages_path_is_anthropics_404(gw: Running, method: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"{gw.url}/v1/messages/batches", headers={"x-api-key": gw.key}, json={}
        ) as response,
    ):
        assert response.status == 404
        assert response.headers["request-id"]
        body = await response.json()
    assert body == {"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}}


# -- refusals in history -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gemini-2.5-flash"])
async def test_an_assistant_refusal_in_history_is_sent_as_its_text(
    gw: Running, sent: list[dict[str, Any]], model: str
) -> None:
    refused: Any = [
        {"role": "user", "content": "Do something bad"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        {"role": "user", "content": "Something good, then"},
        {"role": "assistant", "content": None, "refusal": "Still no."},
        {"role": "user", "content": "Fine"},
    ]
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with client:
        reply = await client.chat.completions.create(model=model, messages=refused, max_tokens=5)
    assert reply.choices[0].message.content
    body = sent[-1]
    if "messages" in body:
        turns = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
        assert turns == [
            [{"type": "text", "text": "I can't."}],
            [{"type": "text", "text": "Still no."}],
        ]
    else:
        turns = [c["parts"] for c in body["contents"] if c["role"] == "model"]
        assert turns == [[{"text": "I can't."}], [{"text": "Still no."}]]


# -- top_k -------------------------------------------------------------------------------


async def test_top_k_reaches_claude_and_gemini_not_openai(
    claude: anthropic.AsyncAnthropic, gw: Running, sent: list[dict[str, Any]]
) -> None:
    for model in ("claude-sonnet-4", "gemini-2.5-flash", "gpt-4o-mini"):
        await claude.messages.create(
            model=model, max_tokens=5, messages=HELLO, extra_body={"top_k": 5}
        )
    anthropic_body, gemini_body, openai_body = sent[-3:]
    assert anthropic_body["top_k"] == 5
    assert gemini_body["generationConfig"]["topK"] == 5
    assert "top_k" not in openai_body
    client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
    async with client:
        for model in ("claude-sonnet-4", "gemini-2.5-flash", "gpt-4o-mini"):
            await client.chat.completions.create(
                model=model, messages=HELLO, max_tokens=5, extra_body={"top_k": 7}
            )
    anthropic_body, gemini_body, openai_body = sent[-3:]
    assert anthropic_body["top_k"] == 7
    assert gemini_body["generationConfig"]["topK"] == 7
    assert openai_body["top_k"] == 7  # unknown fields reach OpenAI-wire hosts as they came


async def test_a_negative_top_k_is_anthropics_400(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(
            model="claude-sonnet-4", max_tokens=5, messages=HELLO, extra_body={"top_k": -1}
        )
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["error"]["message"].startswith("top_k")


# -- tool results ------------------------------------------------------------------------

PNG = "iVBORw0KGgo="
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}


def _tool_turns(content: Any) -> Any:
    return [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, **content}
            ],
        },
    ]


TOOLS: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]


async def test_a_tool_results_error_and_image_reach_claude(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]]
) -> None:
    content = {"content": [{"type": "text", "text": "no such city"}, IMAGE]}
    await claude.messages.create(
        model="claude-sonnet-4", max_tokens=5, tools=TOOLS, messages=_tool_turns(content)
    )
    result = sent[-1]["messages"][2]["content"][0]
    assert result == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": [{"type": "text", "text": "no such city"}, IMAGE],
        "is_error": True,
    }


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
async def test_other_upstreams_note_the_error_and_refuse_the_image(
    claude: anthropic.AsyncAnthropic, sent: list[dict[str, Any]], model: str
) -> None:
    text_only = {"content": "no such city"}
    await claude.messages.create(
        model=model, max_tokens=5, tools=TOOLS, messages=_tool_turns(text_only)
    )
    if model == "gpt-4o-mini":
        assert sent[-1]["messages"][2] == {
            "role": "tool",
            "tool_call_id": "toolu_1",
            "content": "Error: no such city",
        }
    else:
        response = sent[-1]["contents"][2]["parts"][0]["functionResponse"]["response"]
        assert response == {"error": "no such city"}
    with pytest.raises(anthropic.BadRequestError) as refused:
        await claude.messages.create(
            model=model,
            max_tokens=5,
            tools=TOOLS,
            messages=_tool_turns({"content": [IMAGE]}),
        )
    assert isinstance(refused.value.body, dict)
    assert "only text in a tool result" in refused.value.body["error"]["message"]
