"""The official SDKs against the gateway, with each upstream wire format behind it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import anthropic
import openai
import pytest

from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import Running, gateway_config, start_gateway

CHAT_MODELS = ["gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash", "mistral-large"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def _client(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_chat_streamed_and_not_report_the_same_usage(gateway: Running, model: str) -> None:
    client = _client(gateway)
    messages = [{"role": "user", "content": "Say hello to the world"}]
    reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=12)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == reply.choices[0].message.content
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    await client.close()


@pytest.mark.parametrize("model", CHAT_MODELS)
async def test_tool_calls_go_out_and_results_come_back(gateway: Running, model: str) -> None:
    client = _client(gateway)
    messages: list = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content
    await client.close()


async def test_a_stream_without_include_usage_gets_no_usage_chunk(gateway: Running) -> None:
    client = _client(gateway)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.choices for c in chunks)
    await client.close()


async def test_embeddings_images_and_models(gateway: Running) -> None:
    client = _client(gateway)
    emb = await client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], dimensions=8
    )
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    img = await client.images.generate(
        model="dall-e-3", prompt="a red fox", size="1024x1024", response_format="b64_json", n=1
    )
    png = base64.b64decode(img.data[0].b64_json or "")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    models = await client.models.list()
    assert {"gpt-4o-mini", "dall-e-3"} <= {m.id for m in models.data}
    assert (await client.models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")
    await client.close()


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-4o-mini", "gemini-2.5-flash"])
async def test_anthropic_sdk_works_whatever_serves_the_model(gateway: Running, model: str) -> None:
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    message = await client.messages.create(
        model=model,
        max_tokens=10,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert message.content[0].type == "text" and message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 10
    async with client.messages.stream(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "Hello there"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == message.content[0].text
    assert final.usage.output_tokens == 10
    await client.close()


async def test_the_messages_api_takes_more_than_openais_four_stop_sequences(
    gateway: Running,
) -> None:
    """OpenAI's limit of 4 applied to /v1/messages too: a 400 even for Claude."""
    stops = ["one", "two", "three", "four", "five", "six"]
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    async with client:
        message = await client.messages.create(
            model="claude-sonnet-4",
            max_tokens=10,
            stop_sequences=stops,
            messages=[{"role": "user", "content": "Hello there"}],
        )
        assert message.content[0].type == "text"
        # An upstream with a limit of its own refuses more, in Anthropic's error shape.
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model="mistral-large",
                max_tokens=10,
                stop_sequences=stops,
                messages=[{"role": "user", "content": "Hello there"}],
            )
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"


async def test_the_openai_sdk_reads_the_request_id(gateway: Running) -> None:
    client = _client(gateway)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    reply = raw.parse()
    assert reply._request_id == raw.headers["x-faregate-request-id"]
    assert reply._request_id.startswith("req_")
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.request_id and missing.value.request_id.startswith("req_")
    await client.close()


async def test_a_gemini_thinking_tool_call_can_be_answered_on_any_provider(
    tmp_path: Path, mock: MockServer
) -> None:
    """Gemini's thought signature rides in the tool call id (hundreds of base64 characters):
    OpenAI refuses ids past 40 characters and Anthropic any '+', '/' or '=', so a failover or
    a cheaper deployment on the next turn was a 400. They get the id without it; Gemini gets
    the signature back."""
    thinking = {
        "name": "gemini-thinking",
        "deployments": [
            {
                "provider": "gemini",
                "model": "gemini-reasoning-flash",
                "price_key": "gemini-2.5-flash",
            }
        ],
    }
    models = gateway_config(mock.url)["models"] + [thinking]
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, {"models": models}
    )
    try:
        client = _client(gw)
        messages: list = [{"role": "user", "content": "Weather in Paris?"}]
        first = await client.chat.completions.create(
            model="gemini-thinking", messages=messages, tools=[WEATHER]
        )
        call = first.choices[0].message.tool_calls[0]
        assert len(call.id) > 40 and "." in call.id  # the signature, carried in the id
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        for model in ("gpt-4o-mini", "claude-sonnet-4", "gemini-thinking", "mistral-large"):
            reply = await client.chat.completions.create(
                model=model, messages=messages, tools=[WEATHER]
            )
            assert reply.choices[0].message.content, model
        await client.close()
    finally:
        await gw.runner.cleanup()


async def test_openais_temperatures_above_one_reach_claude_at_its_most_random(
    gateway: Running,
) -> None:
    """OpenAI's scale goes to 2, Anthropic's to 1 (it refuses more): a temperature of 1.5 to
    a Claude model was the upstream's 400."""
    client = _client(gateway)
    reply = await client.chat.completions.create(
        model="claude-sonnet-4",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        temperature=1.5,
    )
    assert reply.choices[0].message.content
    await client.close()
    async with anthropic.AsyncAnthropic(
        base_url=gateway.url, api_key=gateway.key, max_retries=0
    ) as claude:
        with pytest.raises(anthropic.BadRequestError) as refused:  # the Messages API's range
            await claude.messages.create(
                model="gpt-4o-mini",
                max_tokens=3,
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"temperature": 1.5},
            )
    body = refused.value.body
    assert isinstance(body, dict) and "temperature" in body["error"]["message"]
