"""The Anthropic Messages wire format (POST /v1/messages), translated to and from OpenAI's
chat shape. Request mapping lives in anthropic_request.py; this module holds the adapter,
response, usage and error mapping, and the SSE stream parser.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import orjson

from faregate.config import ConfigError
from faregate.providers.anthropic_request import messages_request
from faregate.providers.base import (
    ChatResult,
    EmbeddingsResult,
    Endpoint,
    ImagesResult,
    StreamState,
)
from faregate.providers.http import ErrorDetail, SSEEvent, Upstream, bad_response, stream_cut
from faregate.providers.shape import chunk, completion, delta_choice, tool_call, unsupported
from faregate.providers.transport import HttpTransport
from faregate.usage import Usage

API_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_SUFFIX = "/count_tokens"
# The fields of a Messages request that count_tokens takes (it refuses the others, such as
# max_tokens, stream or temperature).
COUNTED_FIELDS = (
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "cache_control",
    "output_config",
)
DEFAULT_MAX_TOKENS = 4096
# The provider's `thinking` option: what reasoning_effort asks of its models.
THINKING_BUDGET = "budget"  # thinking.type enabled with budget_tokens (before Opus 4.7)
THINKING_ADAPTIVE = "adaptive"  # thinking.type adaptive and output_config.effort
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
PROMPT_TOO_LONG = "prompt is too long"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code for the same refusal
# The status each error `type` stands for, for errors that arrive inside a stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider:
    """Chat (plain and streamed, with tools and images) against the Messages API."""

    wire: ClassVar[str] = "anthropic"
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "chat_stream", "tools", "vision"})

    def __init__(
        self, endpoint: Endpoint, session: aiohttp.ClientSession, transport: HttpTransport
    ) -> None:
        headers = {"anthropic-version": str(endpoint.option("anthropic_version", API_VERSION))}
        if endpoint.api_key:
            headers["x-api-key"] = endpoint.api_key
        self.http = Upstream(endpoint, session, headers, parse_error, transport)
        base = endpoint.base_url.rstrip("/")
        self.url = base + ("/messages" if base.endswith("/v1") else MESSAGES_PATH)
        self.count_url = self.url + COUNT_TOKENS_SUFFIX
        self.default_max_tokens = int(endpoint.option("default_max_tokens", DEFAULT_MAX_TOKENS))
        # How reasoning_effort turns thinking on: a budget, or adaptively at an effort.
        thinking = endpoint.option("thinking", THINKING_BUDGET)
        if thinking not in (THINKING_BUDGET, THINKING_ADAPTIVE):
            raise ConfigError(
                f"provider {endpoint.name!r}: thinking must be {THINKING_BUDGET!r} or "
                f"{THINKING_ADAPTIVE!r}, not {thinking!r}"
            )
        self.adaptive = thinking == THINKING_ADAPTIVE

    def _request(self, body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        return messages_request(
            body,
            model,
            default_max_tokens=self.default_max_tokens,
            stream=stream,
            adaptive=self.adaptive,
        )

    async def chat(self, body: dict[str, Any], model: str) -> ChatResult:
        request = self._request(body, model, stream=False)
        return await self.http.post_json(self.url, request, chat_result)

    async def chat_stream(
        self, body: dict[str, Any], model: str, state: StreamState
    ) -> AsyncIterator[dict[str, Any]]:
        request = self._request(body, model, stream=True)
        parser = StreamParser(model, state, self.http)
        async for item in self.http.stream(self.url, request, parser, state):
            yield item

    async def count_tokens(self, body: dict[str, Any], model: str) -> int:
        """The input tokens of an OpenAI chat body as `model` counts them
        (`POST /v1/messages/count_tokens`, free of charge): the request `chat` would send,
        without the fields that are not counted."""
        request = self._request(body, model, stream=False)
        counted = {key: request[key] for key in COUNTED_FIELDS if key in request}
        return await self.http.post_json(self.count_url, counted, input_tokens)

    async def embeddings(self, body: dict[str, Any], model: str) -> EmbeddingsResult:
        raise unsupported("embeddings")

    async def images(self, body: dict[str, Any], model: str) -> ImagesResult:
        raise unsupported("image generation")

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the app."""


# -- response and usage mapping ----------------------------------------------------------


def usage_from_anthropic(raw: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens exclude cache reads and writes; the canonical count
    includes both, the reads as `cached_input_tokens`, the writes as `cache_write_tokens`
    (those written for an hour, `cache_creation.ephemeral_1h_input_tokens`, also as
    `cache_write_1h_tokens`)."""
    cache_read = int(raw.get("cache_read_input_tokens") or 0)
    cache_write = int(raw.get("cache_creation_input_tokens") or 0)
    details = raw.get("output_tokens_details") or {}
    lifetimes = raw.get("cache_creation")
    hour = int(lifetimes.get("ephemeral_1h_input_tokens") or 0) if lifetimes else 0
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + cache_read + cache_write,
        output_tokens=int(raw.get("output_tokens") or 0),
        cached_input_tokens=cache_read,
        reasoning_tokens=int(details.get("thinking_tokens") or 0),
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=min(hour, cache_write),
    )


def input_tokens(data: Any) -> int:
    """count_tokens' answer: `{"input_tokens": N}`."""
    count = data.get("input_tokens") if isinstance(data, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise bad_response("The upstream provider's token count has no input_tokens.")
    return count


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason), "stop")


def stop_sequence(stop_reason: Any, matched: Any) -> str | None:
    """The stop sequence that ended the message, for the choice's `stop_reason` (where
    vLLM's OpenAI-compatible server reports it; OpenAI's own answers have no such field)."""
    return matched if stop_reason == "stop_sequence" and isinstance(matched, str) else None


def thinking_block(block: dict[str, Any]) -> dict[str, Any] | None:
    """A thinking or redacted_thinking block as the canonical message's `thinking_blocks`
    hold it (LiteLLM's field): the block as Claude sent it, signature or data included,
    which a later turn must send back unchanged; None for any other block."""
    kind = block.get("type")
    if kind == "thinking":
        return {
            "type": "thinking",
            "thinking": str(block.get("thinking") or ""),
            "signature": str(block.get("signature") or ""),
        }
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": str(block.get("data") or "")}
    return None


def chat_result(data: Any) -> ChatResult:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise bad_response("The upstream provider sent a message without content.")
    text = "".join(b["text"] for b in data["content"] if b.get("type") == "text")
    calls = [
        tool_call(b["id"], b["name"], b.get("input") or {})
        for b in data["content"]
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    message["refusal"] = None
    thoughts = [t for b in data["content"] if (t := thinking_block(b)) is not None]
    if thoughts:  # the thinking text as reasoning_content too, as LiteLLM and DeepSeek put it
        message["reasoning_content"] = "".join(t.get("thinking", "") for t in thoughts)
        message["thinking_blocks"] = thoughts
    usage = usage_from_anthropic(data.get("usage") or {})
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(data.get("stop_reason")),
    }
    matched = stop_sequence(data.get("stop_reason"), data.get("stop_sequence"))
    if matched is not None:
        choice["stop_reason"] = matched
    body = completion(
        str(data.get("id")), str(data.get("model")), int(time.time()), [choice], usage
    )
    return ChatResult(body=body, usage=usage)


# -- error mapping ---------------------------------------------------------------------


def parse_error(body: Any) -> ErrorDetail:
    """`{"type": "error", "error": {"type", "message"}}`. Anthropic has no finer structured
    code than `type`, so a 400 keeps the generic code, but for a prompt over the context
    window: OpenAI's `context_length_exceeded`, which failover acts on. Anthropic marks it
    only in the message ("prompt is too long: N tokens > M maximum"), so its prefix is read
    here, the one place that knows this wire's wording."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ErrorDetail()
    message = error.get("message")
    if not isinstance(message, str):
        return ErrorDetail()
    if error.get("type") == "invalid_request_error" and message.startswith(PROMPT_TOO_LONG):
        return ErrorDetail(message=message, code=CONTEXT_LENGTH_EXCEEDED, param="messages")
    return ErrorDetail(message=message)


def error_status(body: Any) -> int:
    """The HTTP status an in-stream `error` event stands for."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return ERROR_STATUS.get(str(kind), 500)


# -- stream parsing --------------------------------------------------------------------


class StreamParser:
    """Messages SSE events to OpenAI chunks: role first, text and tool-call fragments,
    a finish chunk at message_delta, and a usage-only chunk (`choices: []`) at the end."""

    def __init__(self, model: str, state: StreamState, http: Upstream) -> None:
        self.state = state
        self.http = http
        self.id = ""
        self.model = model
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self.tool_args: set[int] = set()  # tool blocks that streamed some input
        self.stop_reason: Any = None
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chunk(self.id, self.model, self.created, [delta_choice(0, delta, finish)])

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        data = orjson.loads(event.data)
        kind = data.get("type")
        if kind == "message_start":
            return self._message_start(data["message"])
        if kind == "content_block_start":
            return self._block_start(data["index"], data["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(data["index"], data["delta"])
        if kind == "content_block_stop":
            return self._block_stop(data["index"])
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise self.http.detail_error(error_status(data), data)
        return []  # ping, and event types added later

    def _message_start(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        self.id = str(message.get("id") or "")
        self.model = str(message.get("model") or self.model)
        self.usage.update(message.get("usage") or {})
        self.state.reported = usage_from_anthropic(self.usage)  # the input, counted already
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        if block.get("type") == "redacted_thinking":
            return [self._chunk({"thinking_blocks": [thinking_block(block)]})]
        if block.get("type") == "thinking" and block.get("thinking"):
            return [self._thinking(str(block["thinking"]))]
        if block.get("type") == "tool_use":
            position = self.tools[index] = len(self.tools)
            call = {
                "index": position,
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            self.tool_args.add(index)
            return [self._arguments(index, delta["partial_json"])]
        if delta.get("type") == "thinking_delta" and delta.get("thinking"):
            return [self._thinking(str(delta["thinking"]))]
        if delta.get("type") == "signature_delta":
            # The signature ends its thinking block: a later thinking delta starts another.
            signed = {"type": "thinking", "thinking": "", "signature": str(delta.get("signature"))}
            return [self._chunk({"thinking_blocks": [signed]})]
        return []

    def _thinking(self, text: str) -> dict[str, Any]:
        """A piece of thinking, as LiteLLM streams it: `reasoning_content`, and the piece of
        the thinking block it belongs to (whose signature comes in a later chunk)."""
        piece = {"type": "thinking", "thinking": text}
        return self._chunk({"reasoning_content": text, "thinking_blocks": [piece]})

    def _block_stop(self, index: int) -> list[dict[str, Any]]:
        if index in self.tools and index not in self.tool_args:
            return [self._arguments(index, "{}")]  # a tool called without input
        return []

    def _arguments(self, index: int, fragment: str) -> dict[str, Any]:
        call = {"index": self.tools[index], "function": {"arguments": fragment}}
        return self._chunk({"tool_calls": [call]})

    def _message_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = data.get("delta") or {}
        self.stop_reason = delta.get("stop_reason")
        # message_delta usage is cumulative and may restate the input counts.
        self.usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        self.state.reported = usage_from_anthropic(self.usage)
        finish = self._chunk({}, finish_reason(self.stop_reason))
        matched = stop_sequence(self.stop_reason, delta.get("stop_sequence"))
        if matched is not None:
            finish["choices"][0]["stop_reason"] = matched
        return [finish]

    def close(self) -> list[dict[str, Any]]:
        if not self.done:
            raise stream_cut()
        usage = usage_from_anthropic(self.usage)
        self.state.usage = usage
        self.state.finish_reason = finish_reason(self.stop_reason)
        return [chunk(self.id, self.model, self.created, [], usage)]
