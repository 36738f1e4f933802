"""One contract every adapter keeps, run against the built-in mock provider speaking each
wire format. An adapter takes part in a test only if its `capabilities` declare the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from faregate.mockprovider.config import MockBehaviour, MockConfig
from faregate.mockprovider.server import MockServer, start_mock
from faregate.providers.base import Endpoint, Provider, ProviderError, StreamState
from faregate.providers.registry import WIRES, build_provider
from faregate.providers.transport import HttpTransport

KEY = "sk-contract-key"
HANG_TIMEOUT = 0.3


@dataclass(frozen=True)
class Wire:
    """How one wire format is reached on the mock, and what its models are called."""

    wire: str
    base: Callable[[str], str]  # deployment URL -> base_url
    chat_model: str
    reasoning_model: str | None = None
    embeddings_model: str | None = None
    images_model: str | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        return WIRES[self.wire].capabilities  # type: ignore[no-any-return]


WIRE_CASES = [
    Wire(
        "openai",
        lambda url: f"{url}/v1",
        "gpt-4o-mini",
        reasoning_model="o3-mini",
        embeddings_model="text-embedding-3-small",
        images_model="dall-e-3",
    ),
    Wire("anthropic", lambda url: url, "claude-sonnet-4-5"),
    Wire(
        "gemini",
        lambda url: url,
        "gemini-2.5-flash",
        reasoning_model="gemini-reasoning",
        embeddings_model="text-embedding-004",
    ),
]
DEPLOYMENTS = {
    "ok": MockBehaviour(require_key=KEY),
    "failing": MockBehaviour(error_rate=1.0),
    "limited": MockBehaviour(rate_limit_rate=1.0, retry_after=2.0),
    "hanging": MockBehaviour(hang=True),
    "cut": MockBehaviour(disconnect_after_chunks=3),
    "garbled": MockBehaviour(malformed_rate=1.0),
    "stalling": MockBehaviour(chunk_delay=0.5),
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def supporting(capability: str) -> list[Any]:
    return [pytest.param(w, id=w.wire) for w in WIRE_CASES if capability in w.capabilities]


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock(MockConfig(deployments=dict(DEPLOYMENTS)))
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.close()


@pytest.fixture
def connect(
    mock: MockServer, session: aiohttp.ClientSession, transport: HttpTransport
) -> Callable[..., Provider]:
    def build(wire: Wire, deployment: str = "ok", key: str | None = KEY) -> Provider:
        timeout = HANG_TIMEOUT if deployment == "hanging" else 5.0
        options = (("read_timeout", HANG_TIMEOUT),) if deployment == "stalling" else ()
        endpoint = Endpoint(
            name=f"mock-{wire.wire}",
            wire=wire.wire,
            base_url=wire.base(mock.url_for(deployment)),
            api_key=key,
            timeout=timeout,
            connect_timeout=1.0,
            options=options,
        )
        return build_provider(endpoint, session, transport)

    return build


def chat_body(text: str = "Say something nice about otters.", **extra: Any) -> dict[str, Any]:
    return {
        "model": "public-name",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
        **extra,
    }


async def collect(
    provider: Provider, body: dict[str, Any], model: str
) -> tuple[list[dict[str, Any]], StreamState]:
    state = StreamState()
    chunks = [chunk async for chunk in provider.chat_stream(body, model, state)]
    return chunks, state


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def streamed_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool call fragments joined by index, as an OpenAI client assembles them."""
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for choice in c["choices"]:
            for fragment in choice["delta"].get("tool_calls") or ():
                call = calls.setdefault(fragment["index"], {"name": "", "arguments": ""})
                call["id"] = fragment.get("id") or call.get("id")
                call["name"] += fragment.get("function", {}).get("name") or ""
                call["arguments"] += fragment.get("function", {}).get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


# -- chat --------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_chat_returns_a_completion_with_reported_usage(wire: Wire, connect: Any) -> None:
    result = await connect(wire).chat(chat_body(), wire.chat_model)
    choice = result.body["choices"][0]
    assert result.body["object"] == "chat.completion"
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == 20
    assert not result.usage.estimated
    assert result.body["usage"]["prompt_tokens"] == result.usage.input_tokens


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_the_provider_model_id_replaces_the_public_name(
    wire: Wire, connect: Any, mock: MockServer
) -> None:
    await connect(wire).chat(chat_body(), wire.chat_model)
    assert mock.stats.by_model == {wire.chat_model: 1}


@pytest.mark.parametrize("wire", supporting("chat_stream"))
async def test_stream_yields_chunks_then_a_usage_only_chunk(wire: Wire, connect: Any) -> None:
    chunks, state = await collect(connect(wire), chat_body(), wire.chat_model)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 20
    assert state.finish_reason == "stop"
    assert state.usage is not None and sum(1 for c in chunks if c["choices"]) >= 20


@pytest.mark.parametrize("wire", supporting("chat_stream"))
async def test_streamed_and_whole_replies_agree_on_text_and_usage(wire: Wire, connect: Any) -> None:
    provider = connect(wire)
    whole = await provider.chat(chat_body(), wire.chat_model)
    chunks, state = await collect(provider, chat_body(), wire.chat_model)
    assert streamed_text(chunks) == whole.body["choices"][0]["message"]["content"]
    assert state.usage == whole.usage


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_long_prompts_report_cached_tokens_inside_input_tokens(
    wire: Wire, connect: Any
) -> None:
    """Asked twice: Anthropic caches only a prompt with a breakpoint, written the first
    time; the others cache long prompts on their own (and pass the breakpoint through)."""
    body = chat_body()
    part = {"type": "text", "text": "otter " * 1000, "cache_control": {"type": "ephemeral"}}
    body["messages"][-1]["content"] = [part]
    provider = connect(wire)
    await provider.chat(body, wire.chat_model)
    result = await provider.chat(body, wire.chat_model)
    assert result.usage.cached_input_tokens == 1024
    assert result.usage.input_tokens > 1500  # inclusive of the cached prefix


@pytest.mark.parametrize("wire", [w for w in supporting("chat") if w.values[0].reasoning_model])
async def test_reasoning_tokens_are_inside_output_tokens(wire: Wire, connect: Any) -> None:
    provider = connect(wire)
    assert wire.reasoning_model is not None
    whole = await provider.chat(chat_body(), wire.reasoning_model)
    assert (whole.usage.output_tokens, whole.usage.reasoning_tokens) == (20, 10)
    _, state = await collect(provider, chat_body(), wire.reasoning_model)
    assert state.usage == whole.usage


# -- tools -------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", supporting("tools"))
async def test_tool_calls_round_trip(wire: Wire, connect: Any) -> None:
    provider = connect(wire)
    asked = chat_body("What is the weather in Paris?", tools=[WEATHER], tool_choice="auto")
    first = await provider.chat(asked, wire.chat_model)
    choice = first.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "mock"}

    answered = {
        **asked,
        "messages": [
            *asked["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": '{"celsius": 21}'},
        ],
    }
    second = await provider.chat(answered, wire.chat_model)
    assert second.body["choices"][0]["finish_reason"] == "stop"
    assert second.body["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    "wire", [w for w in supporting("tools") if "chat_stream" in w.values[0].capabilities]
)
async def test_streamed_tool_calls_assemble_to_the_whole_call(wire: Wire, connect: Any) -> None:
    provider = connect(wire)
    asked = chat_body("What is the weather in Paris?", tools=[WEATHER])
    whole = (await provider.chat(asked, wire.chat_model)).body["choices"][0]["message"]
    chunks, state = await collect(provider, asked, wire.chat_model)
    calls = streamed_calls(chunks)
    assert [(c["name"], orjson.loads(c["arguments"])) for c in calls] == [
        (t["function"]["name"], orjson.loads(t["function"]["arguments"]))
        for t in whole["tool_calls"]
    ]
    assert all(c["id"] for c in calls)
    assert state.finish_reason == "tool_calls"


# -- errors ------------------------------------------------------------------------------


async def _error(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await call
    return info.value


async def _stream_error(provider: Provider, model: str) -> tuple[ProviderError, int]:
    received = 0
    with pytest.raises(ProviderError) as info:
        async for _ in provider.chat_stream(chat_body(), model, StreamState()):
            received += 1
    return info.value, received


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_server_errors_are_retryable(wire: Wire, connect: Any) -> None:
    err = await _error(connect(wire, "failing").chat(chat_body(), wire.chat_model))
    assert err.retryable and err.status in (502, 503)
    err, received = await _stream_error(connect(wire, "failing"), wire.chat_model)
    assert err.retryable and received == 0


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_rate_limits_keep_429_and_retry_after(wire: Wire, connect: Any) -> None:
    err = await _error(connect(wire, "limited").chat(chat_body(), wire.chat_model))
    assert (err.status, err.code, err.retryable, err.retry_after) == (
        429,
        "rate_limit_exceeded",
        True,
        2.0,
    )


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_a_prompt_over_the_context_window_is_a_context_length_exceeded_400(
    wire: Wire, connect: Any
) -> None:
    """Not retryable on the same deployment; failover's context-window plan acts on it."""
    body = chat_body("context_length_exceeded")
    err = await _error(connect(wire).chat(body, wire.chat_model))
    assert (err.status, err.type, err.code, err.param, err.retryable) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        False,
    )


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_a_missing_provider_key_is_an_upstream_auth_error(wire: Wire, connect: Any) -> None:
    err = await _error(connect(wire, key=None).chat(chat_body(), wire.chat_model))
    assert (err.status, err.code, err.retryable) == (502, "upstream_auth_error", False)


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_a_hanging_upstream_times_out_as_504(wire: Wire, connect: Any) -> None:
    started = asyncio.get_running_loop().time()
    err = await _error(connect(wire, "hanging").chat(chat_body(), wire.chat_model))
    assert (err.status, err.code, err.retryable) == (504, "upstream_timeout", True)
    assert asyncio.get_running_loop().time() - started < HANG_TIMEOUT + 1.0
    err, _ = await _stream_error(connect(wire, "hanging"), wire.chat_model)
    assert err.status == 504


@pytest.mark.parametrize("wire", supporting("chat_stream"))
async def test_a_stream_cut_midway_raises_after_its_first_chunks(wire: Wire, connect: Any) -> None:
    err, received = await _stream_error(connect(wire, "cut"), wire.chat_model)
    assert received > 0
    assert (err.status, err.code, err.retryable) == (502, "upstream_disconnected", True)


@pytest.mark.parametrize("wire", supporting("chat_stream"))
async def test_a_stream_stalling_between_chunks_times_out(wire: Wire, connect: Any) -> None:
    err, received = await _stream_error(connect(wire, "stalling"), wire.chat_model)
    assert received > 0
    assert (err.status, err.code, err.retryable) == (504, "upstream_timeout", True)


@pytest.mark.parametrize("wire", supporting("chat_stream"))
async def test_closing_a_stream_early_leaves_the_adapter_usable(wire: Wire, connect: Any) -> None:
    provider = connect(wire)
    stream = provider.chat_stream(chat_body(), wire.chat_model, StreamState())
    first = await stream.__anext__()
    assert first["choices"]
    await stream.aclose()  # type: ignore[attr-defined]
    result = await provider.chat(chat_body(), wire.chat_model)
    assert result.usage.output_tokens == 20


@pytest.mark.parametrize("wire", supporting("chat"))
async def test_malformed_bodies_are_bad_responses(wire: Wire, connect: Any) -> None:
    err = await _error(connect(wire, "garbled").chat(chat_body(), wire.chat_model))
    assert (err.status, err.code, err.retryable) == (502, "upstream_bad_response", True)
    err, _ = await _stream_error(connect(wire, "garbled"), wire.chat_model)
    assert err.status == 502 and err.retryable


# -- embeddings, images, moderations -----------------------------------------------------


@pytest.mark.parametrize("wire", supporting("embeddings"))
async def test_embeddings_return_one_vector_per_input(wire: Wire, connect: Any) -> None:
    assert wire.embeddings_model is not None
    body = {"model": "public-embed", "input": ["first text", "second text"]}
    result = await connect(wire).embeddings(body, wire.embeddings_model)
    assert [d["index"] for d in result.body["data"]] == [0, 1]
    assert all(isinstance(d["embedding"], list) and d["embedding"] for d in result.body["data"])
    assert result.usage.input_tokens > 0
    assert result.body["usage"]["prompt_tokens"] == result.usage.input_tokens


@pytest.mark.parametrize("wire", supporting("images"))
async def test_images_report_count_size_and_quality(wire: Wire, connect: Any) -> None:
    assert wire.images_model is not None
    body = {
        "model": "public-image",
        "prompt": "an otter",
        "n": 2,
        "size": "1024x1792",
        "quality": "hd",
    }
    result = await connect(wire).images(body, wire.images_model)
    assert len(result.body["data"]) == 2
    usage = result.usage
    assert (usage.images, usage.image_width, usage.image_height, usage.image_quality) == (
        2,
        1024,
        1792,
        "hd",
    )


@pytest.mark.parametrize("wire", supporting("moderations"))
async def test_moderations_return_results(wire: Wire, connect: Any) -> None:
    body = {"model": "public-moderation", "input": "I love otters."}
    result = await connect(wire).moderations(body, "omni-moderation-latest")
    assert len(result.body["results"]) == 1
    assert result.usage.estimated
