"""OpenAI `POST /v1/chat/completions`: the request's prompt and options in, a `chat.completion`
or a stream of `chat.completion.chunk` events out (usage chunk when
`stream_options.include_usage`, then `data: [DONE]`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from faregate.mockprovider import checks
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
from faregate.mockprovider.stream import frame_template, sse_data
from faregate.mockprovider.tokens import PromptTally

FINGERPRINT = "fp_mock"
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
FINISH = {STOP: "stop", LENGTH: "length", STOP_SEQUENCE: "stop", TOOL: "tool_calls"}
MAX_CALL_ID = 40
DONE = b"data: [DONE]\n\n"
_ARG_PIECE = 8


async def chat_completions(call: Call) -> web.StreamResponse:
    ask = parse_chat(call.body)
    window = call.behaviour.context_window
    if window is not None and ask.prompt_tokens > window:
        raise _context_error(window, ask.prompt_tokens)
    reply = plan_reply(ask, call.behaviour.output_tokens)
    if call.body.get("stream") is True:
        options = checks.mapping(call.body.get("stream_options"), "stream_options")
        return await _stream(call, ask.model, reply, options.get("include_usage") is True)
    await call.pause(reply.output_tokens)
    return json_response(
        {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": ask.model,
            "choices": [_choice(i, c) for i, c in enumerate(reply.choices)],
            "usage": usage(reply),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
    )


def _context_error(window: int, tokens: int) -> MockError:
    return MockError(
        400,
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
        param="messages",
    )


def parse_chat(body: Mapping[str, Any]) -> Ask:
    model = checks.required_str(body, "model")
    messages = checks.required_list(body, "messages")
    tally = PromptTally()
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise MockError(400, "Each message needs a valid 'role'.", param=f"messages[{index}]")
        _check_call_ids(message, index)
        tally.message(_message_text(message, tally))
    tools = _tools(body.get("tools"), tally)
    if tally.overflow:
        raise _context_error(128000, tally.tokens + 128000)
    max_tokens = checks.optional_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = checks.optional_int(body, "max_tokens")
    return Ask(
        model=model,
        prompt_tokens=tally.tokens,
        max_tokens=max_tokens,
        n=checks.optional_int(body, "n", maximum=128) or 1,
        stop=checks.string_list(body.get("stop"), "stop", limit=4),
        tool=_tool_to_call(body, tools, messages[-1], tally),
        json_schema=_json_schema(body.get("response_format")),
    )


def _check_call_ids(message: Mapping[str, Any], index: int) -> None:
    """OpenAI takes tool call ids (and a tool message's reference to one) of at most 40
    characters."""
    ids = [(f"messages[{index}].tool_call_id", message.get("tool_call_id"))]
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        ids += [
            (f"messages[{index}].tool_calls[{k}].id", call.get("id"))
            for k, call in enumerate(calls)
            if isinstance(call, dict)
        ]
    for param, call_id in ids:
        if isinstance(call_id, str) and len(call_id) > MAX_CALL_ID:
            raise MockError(
                400,
                f"Invalid '{param}': string too long. Expected a string with maximum length "
                f"{MAX_CALL_ID}, but got a string with length {len(call_id)} instead.",
                param=param,
                code="string_above_max_length",
            )


def _message_text(message: Mapping[str, Any], tally: PromptTally) -> str:
    content = message.get("content")
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                tally.image()
    for tool_use in message.get("tool_calls") or ():
        function = tool_use.get("function") if isinstance(tool_use, dict) else None
        if isinstance(function, dict):
            texts.append(f"{function.get('name', '')}{function.get('arguments', '')}")
    return "\n".join(texts)


def _tools(value: Any, tally: PromptTally) -> list[Mapping[str, Any]]:
    """The request's function definitions, counted into the prompt."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MockError(400, "'tools' must be an array.", param="tools")
    functions: list[Mapping[str, Any]] = []
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise MockError(400, "Each tool needs a function with a name.", param=f"tools[{index}]")
        for key, kind, name in (
            ("parameters", dict, "an object"),
            ("description", str, "a string"),
        ):
            value = function.get(key)
            if value is not None and not isinstance(value, kind):
                where = f"tools[{index}].function.{key}"
                raise MockError(
                    400,
                    f"Invalid type for '{where}': expected {name}, but got "
                    f"{type(value).__name__} instead.",
                    code="invalid_type",
                    param=where,
                )
        tally.tool(function["name"], function.get("description") or "", function.get("parameters"))
        functions.append(function)
    return functions


def _tool_to_call(
    body: Mapping[str, Any],
    functions: list[Mapping[str, Any]],
    last: Mapping[str, Any],
    tally: PromptTally,
) -> ToolCall | None:
    """Call a tool when tools are offered and the user spoke last; after a tool result, talk."""
    choice = body.get("tool_choice", "auto")
    if not functions or choice == "none" or last.get("role") != "user":
        return None
    target = functions[0]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        matches = [f for f in functions if f["name"] == name]
        if not matches:
            raise MockError(400, f"Tool choice '{name}' is not in tools.", param="tool_choice")
        target = matches[0]
    return tool_call(target["name"], target.get("parameters"), tally.last_text)


def _json_schema(value: Any) -> Mapping[str, Any] | None:
    fmt = checks.mapping(value, "response_format")
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = checks.mapping(fmt.get("json_schema"), "response_format.json_schema")
        return checks.mapping(spec.get("schema"), "response_format.json_schema.schema")
    raise MockError(400, f"Invalid response_format type '{kind}'.", param="response_format.type")


def usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def _tool_json(choice: Choice) -> list[dict[str, Any]]:
    assert choice.tool is not None
    function = {"name": choice.tool.name, "arguments": choice.tool.arguments_json}
    return [{"id": choice.tool.call_id("call_"), "type": "function", "function": function}]


def _choice(index: int, choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    if choice.tool is not None:
        message["tool_calls"] = _tool_json(choice)
    else:
        message["content"] = choice.text
    message["annotations"] = []
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": FINISH[choice.finish],
    }


async def _stream(call: Call, model: str, reply: Reply, include_usage: bool) -> web.StreamResponse:
    head: dict[str, Any] = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
        "choices": [],
    }
    if include_usage:
        head["usage"] = None  # every chunk but the last carries "usage": null
    chunk = frame_template(head, "choices")
    stream = call.stream()
    await stream.open()
    for index, choice in enumerate(reply.choices):
        for delta, finish in _deltas(choice):
            entry = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            await stream.send(chunk([entry]))
    if include_usage:
        await stream.send(sse_data({**head, "usage": usage(reply)}))
    await stream.send(DONE)
    return await stream.close()


def _deltas(choice: Choice) -> list[tuple[dict[str, Any], str | None]]:
    """One choice's deltas in OpenAI's order: role first, one per token, then the finish."""
    deltas: list[tuple[dict[str, Any], str | None]] = []
    if choice.tool is None:
        first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        deltas.append((first, None))
        deltas.extend(({"content": piece}, None) for piece in choice.pieces)
    else:
        opening = _tool_json(choice)
        arguments = opening[0]["function"]["arguments"]
        opening[0]["index"] = 0
        opening[0]["function"] = {"name": choice.tool.name, "arguments": ""}
        first = {"role": "assistant", "content": None, "tool_calls": opening, "refusal": None}
        deltas.append((first, None))
        for at in range(0, len(arguments), _ARG_PIECE):
            fragment = {"index": 0, "function": {"arguments": arguments[at : at + _ARG_PIECE]}}
            deltas.append(({"tool_calls": [fragment]}, None))
    deltas.append(({}, FINISH[choice.finish]))
    return deltas
