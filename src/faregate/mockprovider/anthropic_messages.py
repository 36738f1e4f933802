"""Anthropic `POST /v1/messages` (and `/v1/messages/count_tokens`): a `message` object, or the
SSE sequence message_start, content_block_start, ping, content_block_delta…,
content_block_stop, message_delta, message_stop. `input_tokens` excludes cache reads.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from faregate.mockprovider import anthropic_thinking, checks
from faregate.mockprovider.anthropic_thinking import Thinking
from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.pipeline import Call, json_response
from faregate.mockprovider.reply import (
    LENGTH,
    STOP,
    STOP_SEQUENCE,
    TOOL,
    Ask,
    Choice,
    Reply,
    ToolCall,
    plan_reply,
    tool_call,
)
from faregate.mockprovider.state import STATE
from faregate.mockprovider.stream import frame_template, sse_event
from faregate.mockprovider.tokens import CACHED_TOKENS, PromptTally, cached_tokens

STOP_REASONS = {
    STOP: "end_turn",
    LENGTH: "max_tokens",
    STOP_SEQUENCE: "stop_sequence",
    TOOL: "tool_use",
}
CONTEXT_WINDOW = 200_000
EFFORTS = ("low", "medium", "high", "xhigh", "max")  # output_config.effort
TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_ARG_PIECE = 8
Cache = tuple[int, int, bool]  # tokens read, tokens written, written for an hour


async def messages(call: Call) -> web.StreamResponse:
    _require_version(call)
    ask, thinking = _parse(call.body)
    window = call.behaviour.context_window
    if window is not None and ask.prompt_tokens > window:
        raise _too_long(ask.prompt_tokens, window)
    reply = plan_reply(ask, call.behaviour.output_tokens)
    cache = _cache_use(call, ask.prompt_tokens)
    thought = _thought(thinking, reply)
    if call.body.get("stream") is True:
        return await _stream(call, ask.model, reply, cache, thought)
    await call.pause(reply.output_tokens)
    choice = reply.choices[0]
    message = _message_head(ask.model, reply, cache)
    message.update(
        content=([thought] if thought else []) + [_block(choice)],
        stop_reason=STOP_REASONS[choice.finish],
        stop_sequence=choice.stop_sequence,
    )
    message["usage"].update(_output_usage(reply))
    return json_response(message)


def _thought(thinking: Thinking | None, reply: Reply) -> dict[str, Any] | None:
    """The thinking block the answer opens with, when the request thinks."""
    if thinking is None or not reply.reasoning_tokens:
        return None
    return anthropic_thinking.block(thinking, reply.reasoning_tokens)


def _output_usage(reply: Reply) -> dict[str, Any]:
    """The output count (thinking included) and, when it thought, how much was thinking."""
    usage: dict[str, Any] = {"output_tokens": reply.output_tokens}
    if reply.reasoning_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": reply.reasoning_tokens}
    return usage


def _delta_usage(reply: Reply, cache: Cache) -> dict[str, Any]:
    """message_delta's usage, cumulative as the API reports it: the input counts
    message_start gave, restated, and the whole output."""
    return {**_input_usage(reply, cache), **_output_usage(reply)}


def _input_usage(reply: Reply, cache: Cache) -> dict[str, int]:
    read, written, _ = cache
    return {
        "input_tokens": reply.prompt_tokens - read - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


async def count_tokens(call: Call) -> web.StreamResponse:
    _require_version(call)
    checks.required_str(call.body, "model")
    tally, _ = _prompt(call.body)
    return json_response({"input_tokens": tally.tokens})


def _require_version(call: Call) -> None:
    if "anthropic-version" not in call.request.headers:
        raise MockError(400, "anthropic-version: header is required")


def _parse(body: Mapping[str, Any]) -> tuple[Ask, Thinking | None]:
    model = checks.required_str(body, "model")
    max_tokens = checks.optional_int(body, "max_tokens")
    if max_tokens is None:
        raise MockError(400, "max_tokens: Field required", param="max_tokens")
    _check_sampling(body)
    thinking = anthropic_thinking.parse(body, max_tokens)
    tally, tools = _prompt(body)
    if tally.overflow:
        raise _too_long(tally.tokens + CONTEXT_WINDOW, CONTEXT_WINDOW)
    anthropic_thinking.check_history(body["messages"], thinking)
    ask = Ask(
        model=model,
        prompt_tokens=tally.tokens,
        max_tokens=max_tokens,
        stop=checks.string_list(body.get("stop_sequences"), "stop_sequences"),
        tool=_tool_to_call(body, tools, body["messages"][-1], tally),
        json_schema=_output_schema(body),
        thinking=thinking.budget if thinking else 0,  # Claude thinks only when asked
    )
    return ask, thinking


def _check_sampling(body: Mapping[str, Any]) -> None:
    """The Messages API takes temperature and top_p from 0 to 1 (OpenAI's temperature goes
    to 2)."""
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise MockError(400, f"{key}: Input should be less than or equal to 1", param=key)


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Structured outputs: `output_config.format` (or the deprecated `output_format` of the
    beta), `{"type": "json_schema", "schema": {...}}`; the reply is JSON that fits it. An
    `output_config.effort` is checked, and changes nothing in the mock's answer."""
    config = checks.mapping(body.get("output_config"), "output_config")
    effort = config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise MockError(
            400,
            "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
            param="output_config.effort",
        )
    where = "output_config.format"
    spec = config.get("format")
    if spec is None and body.get("output_format") is not None:
        where, spec = "output_format", body["output_format"]
    if spec is None:
        return None
    spec = checks.mapping(spec, where)
    if spec.get("type") != "json_schema":
        raise MockError(400, f"{where}.type: Input should be 'json_schema'")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise MockError(400, f"{where}.schema: Field required")
    return schema


def _too_long(tokens: int, window: int) -> MockError:
    return MockError(400, f"prompt is too long: {tokens} tokens > {window} maximum")


def _prompt(body: Mapping[str, Any]) -> tuple[PromptTally, list[Mapping[str, Any]]]:
    """Count the system prompt, every message and every tool definition."""
    messages = checks.required_list(body, "messages")
    tally = PromptTally()
    system = body.get("system")
    if system:
        tally.message(_content_text(system, tally))
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise MockError(400, f"messages.{index}.role: Input should be 'user' or 'assistant'")
        tally.message(_content_text(message.get("content"), tally))
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise MockError(400, "tools: Input should be a valid list")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise MockError(400, f"tools.{index}.name: Field required")
        tally.tool(tool["name"], tool.get("description") or "", tool.get("input_schema"))
    return tally, tools


def _check_tool_id(tool_id: Any, where: str) -> None:
    """Anthropic's tool use ids are letters, digits, '_' and '-'."""
    if not isinstance(tool_id, str) or not TOOL_ID.fullmatch(tool_id):
        raise MockError(400, f"{where}: String should match pattern '^[a-zA-Z0-9_-]+$'")


def _content_text(content: Any, tally: PromptTally) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise MockError(400, "content: Input should be a valid string or list of content blocks")
    texts = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind in ("image", "document"):
            tally.image()
        elif kind == "tool_use":
            _check_tool_id(block.get("id"), "tool_use.id")
            texts.append(block.get("name", "") + orjson.dumps(block.get("input") or {}).decode())
        elif kind == "tool_result":
            _check_tool_id(block.get("tool_use_id"), "tool_result.tool_use_id")
            inner = block.get("content") or ""
            texts.append(inner if isinstance(inner, str) else _content_text(inner, tally))
        elif kind == "thinking":
            texts.append(str(block.get("thinking", "")))
    return "\n".join(texts)


def _tool_to_call(
    body: Mapping[str, Any], tools: list[Mapping[str, Any]], last: Any, tally: PromptTally
) -> ToolCall | None:
    """Use a tool when tools are offered and the user spoke last without a tool result."""
    choice = checks.mapping(body.get("tool_choice"), "tool_choice")
    if not tools or choice.get("type") == "none" or not isinstance(last, dict):
        return None
    content = last.get("content")
    answered = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    if last.get("role") != "user" or answered:
        return None
    target = tools[0]
    if choice.get("type") == "tool":
        matches = [t for t in tools if t["name"] == choice.get("name")]
        if not matches:
            raise MockError(400, f"tool_choice: tool '{choice.get('name')}' not found in tools")
        target = matches[0]
    return tool_call(target["name"], target.get("input_schema"), tally.last_text)


def _breakpoints(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every `cache_control` in the request (on it, a tool, a system or message block)."""
    blocks: list[Any] = [body, *(body.get("tools") or ())]
    system = body.get("system")
    if isinstance(system, list):
        blocks += system
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks += content
    return [
        b["cache_control"]
        for b in blocks
        if isinstance(b, dict) and isinstance(b.get("cache_control"), dict)
    ]


def _cache_use(call: Call, prompt_tokens: int) -> Cache:
    """(tokens read from the prompt cache, tokens written to it, True when written for an
    hour). Only a prompt with a breakpoint is cached; its first sight writes the cached
    prefix (for an hour when a breakpoint says `"ttl": "1h"`), a repeat reads it."""
    breakpoints = _breakpoints(call.body)
    if not breakpoints or not cached_tokens(prompt_tokens):
        return 0, 0, False
    for mark in breakpoints:
        if mark.get("type") != "ephemeral" or mark.get("ttl", "5m") not in ("5m", "1h"):
            raise MockError(400, "cache_control: Input should be {'type': 'ephemeral', 'ttl': "
                            "'5m' | '1h'}")  # fmt: skip
    prompt = {key: call.body.get(key) for key in ("model", "system", "tools", "messages")}
    digest = hashlib.sha256(orjson.dumps(prompt, option=orjson.OPT_SORT_KEYS)).hexdigest()
    seen = call.request.app[STATE].prompt_cache
    if digest in seen:
        return CACHED_TOKENS, 0, False
    seen.add(digest)
    return 0, CACHED_TOKENS, any(mark.get("ttl") == "1h" for mark in breakpoints)


def _usage(reply: Reply, output_tokens: int, cache: Cache) -> dict[str, Any]:
    _, written, hour = cache
    return {
        **_input_usage(reply, cache),
        "cache_creation": {
            "ephemeral_5m_input_tokens": 0 if hour else written,
            "ephemeral_1h_input_tokens": written if hour else 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _message_head(model: str, reply: Reply, cache: Cache) -> dict[str, Any]:
    return {
        "id": "msg_" + os.urandom(12).hex(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(reply, 1, cache),
    }


def _block(choice: Choice) -> dict[str, Any]:
    if choice.tool is None:
        return {"type": "text", "text": choice.text}
    return {
        "type": "tool_use",
        "id": choice.tool.call_id("toolu_"),
        "name": choice.tool.name,
        "input": choice.tool.arguments,
    }


async def _stream(
    call: Call, model: str, reply: Reply, cache: Cache, thought: dict[str, Any] | None
) -> web.StreamResponse:
    choice = reply.choices[0]
    stream = call.stream()
    await stream.open()
    head = _message_head(model, reply, cache)
    await stream.send(sse_event(b"message_start", {"type": "message_start", "message": head}))
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if thought is not None:
        blocks.append(_thought_events(thought))
    opening = {**_block(choice), "input": {}} if choice.tool else {"type": "text", "text": ""}
    blocks.append((opening, _deltas(choice)))
    for index, (start, deltas) in enumerate(blocks):
        await _send_block(stream, index, start, deltas)
    ending = {"stop_reason": STOP_REASONS[choice.finish], "stop_sequence": choice.stop_sequence}
    await stream.send(
        sse_event(
            b"message_delta",
            {"type": "message_delta", "delta": ending, "usage": _delta_usage(reply, cache)},
        )
    )
    await stream.send(sse_event(b"message_stop", {"type": "message_stop"}))
    return await stream.close()


def _thought_events(thought: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A thinking block streamed as Claude streams it: opened empty, its text in
    thinking_delta events, its signature in a signature_delta just before it closes; a
    redacted block comes whole."""
    if thought["type"] == "redacted_thinking":
        return thought, []
    words = [w for w in thought["thinking"].split(" ") if w]
    deltas = [
        {"type": "thinking_delta", "thinking": (" " if i else "") + w} for i, w in enumerate(words)
    ]
    deltas.append({"type": "signature_delta", "signature": thought["signature"]})
    return {"type": "thinking", "thinking": "", "signature": ""}, deltas


async def _send_block(
    stream: Any, index: int, start: dict[str, Any], deltas: list[dict[str, Any]]
) -> None:
    await stream.send(
        sse_event(
            b"content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
    )
    if index == 0:
        await stream.send(sse_event(b"ping", {"type": "ping"}))
    block_delta = frame_template(
        {"type": "content_block_delta", "index": index},
        "delta",
        b"event: content_block_delta\ndata: ",
    )
    for delta in deltas:
        await stream.send(block_delta(delta))
    await stream.send(
        sse_event(b"content_block_stop", {"type": "content_block_stop", "index": index})
    )


def _deltas(choice: Choice) -> list[dict[str, Any]]:
    if choice.tool is None:
        return [{"type": "text_delta", "text": piece} for piece in choice.pieces]
    arguments = choice.tool.arguments_json
    fragments = [""] + [arguments[i : i + _ARG_PIECE] for i in range(0, len(arguments), _ARG_PIECE)]
    return [{"type": "input_json_delta", "partial_json": f} for f in fragments]
