"""The inbound Anthropic Messages requests, as pure functions: a Messages (or count_tokens)
request becomes an OpenAI chat body for the pipeline, whatever provider serves it. The
answers going back are api.anthropic_answer's. No I/O and no HTTP framework here.
"""

from __future__ import annotations

from typing import Any

import orjson

from faregate.errors import InvalidRequest
from faregate.providers.shape import FROM_MESSAGES_API

TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
MIN_THINKING = 1024  # the Messages API's least thinking budget
THINKING_BLOCKS = ("thinking", "redacted_thinking")


# -- requests ------------------------------------------------------------------------


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _validate(body: dict[str, Any]) -> None:
    """A Messages request: model, max_tokens and messages."""
    _validate_prompt(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest(
            "max_tokens: Field required", param="max_tokens", code="missing_required_parameter"
        )
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _invalid("max_tokens: must be an integer of at least 1", "max_tokens")


def _validate_prompt(body: dict[str, Any]) -> None:
    """What a Messages request and a count_tokens request share: model and messages."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "model: Field required", param="model", code="missing_required_parameter"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages: must be a non-empty list",
            param="messages",
            code="missing_required_parameter" if messages is None else "invalid_value",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(
                "messages: each message needs role 'user' or 'assistant'", f"messages[{i}].role"
            )
        if not isinstance(message.get("content"), str | list):
            raise _invalid(
                "messages: content must be a string or a list of blocks", f"messages[{i}].content"
            )


def request_to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body for a Messages request (validated: model, max_tokens, messages)."""
    _validate(body)
    request = _prompt(body)
    request["max_tokens"] = body["max_tokens"]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(x, str) for x in stops):
            raise _invalid("stop_sequences: must be a list of strings", "stop_sequences")
        request["stop"] = stops
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            # The Messages API's range for both (OpenAI's temperature goes to 2).
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise _invalid(f"{key}: must be a number from 0 to 1", key)
            request[key] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise _invalid("top_k: must be a non-negative integer", "top_k")
        request["top_k"] = top_k
    if body.get("stream"):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _invalid("metadata: must be an object", "metadata")
    user = metadata.get("user_id")
    if isinstance(user, str):
        request["user"] = user
    return request


def _thinking(thinking: Any) -> dict[str, Any]:
    """Extended thinking, carried as sent (Claude gets it unchanged; the other adapters map
    it): an object with a `type`; `enabled` with a `budget_tokens` of at least 1,024. Other
    types (`adaptive`, `disabled`, any later one) are left to the upstream to judge."""
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
        raise _invalid("thinking: must be an object with a type", "thinking.type")
    if thinking["type"] == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_THINKING:
            raise _invalid(
                f"thinking.budget_tokens: must be an integer of at least {MIN_THINKING}",
                "thinking.budget_tokens",
            )
    return thinking


def count_request_to_openai(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body whose input tokens a count_tokens request asks for (validated:
    model, messages; system, tools, tool_choice and thinking are counted too)."""
    _validate_prompt(body)
    return _prompt(body)


def _prompt(body: dict[str, Any]) -> dict[str, Any]:
    """The model, the messages (the system prompt first) and the tools, as OpenAI's."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _system(body["system"])})
    for i, message in enumerate(body["messages"]):
        messages.extend(_message(message, f"messages[{i}]"))
    request: dict[str, Any] = {"model": body["model"], "messages": messages}
    if body.get("thinking") is not None:  # counted too
        request["thinking"] = _thinking(body["thinking"])
    if body.get("tools"):
        request["tools"] = [_tool(tool, i) for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice"):
        request.update(_tool_choice(body["tool_choice"]))
    response_format = _response_format(body)
    if response_format is not None:
        request["response_format"] = response_format
    effort = (body.get("output_config") or {}).get("effort")
    if effort is not None:  # Claude's alone, as `thinking` is (docs/providers.md)
        if not isinstance(effort, str):
            raise _invalid("output_config.effort: must be a string", "output_config.effort")
        request["output_config"] = {"effort": effort}
    _cache_control(body, request)  # automatic caching: the breakpoint the API places itself
    request[FROM_MESSAGES_API] = True
    return request


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """Structured outputs: `output_config.format` (or the deprecated top-level
    `output_format` the beta sent), `{"type": "json_schema", "schema": {...}}`, as OpenAI's
    strict `json_schema` response_format. (`output_config.effort` is carried apart.)"""
    config = body.get("output_config")
    if config is not None and not isinstance(config, dict):
        raise _invalid("output_config: must be an object", "output_config")
    spec, where = (config or {}).get("format"), "output_config.format"
    if body.get("output_format") is not None:
        if spec is not None:
            raise _invalid(
                "output_format: deprecated, and given with output_config.format; send only "
                "output_config.format",
                "output_format",
            )
        spec, where = body["output_format"], "output_format"
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        raise _invalid(f"{where}.type: must be 'json_schema'", f"{where}.type")
    if not isinstance(spec.get("schema"), dict):
        raise _invalid(f"{where}.schema: must be a JSON schema object", f"{where}.schema")
    schema = {"name": "output", "schema": spec["schema"], "strict": True}
    return {"type": "json_schema", "json_schema": schema}


def _cache_control(block: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Carry a block's prompt-caching breakpoint, as LiteLLM carries it on OpenAI parts."""
    if block.get("cache_control") is not None:
        target["cache_control"] = block["cache_control"]
    return target


def _system(system: Any) -> Any:
    """The system prompt: a string, or its text blocks as text parts (never glued)."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _invalid("system: must be a string or a list of text blocks", "system")
    parts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid("system: each block must be a text block", f"system[{j}]")
        parts.append(_text_part(block))
    return _collapsed(parts)


def _text_part(block: dict[str, Any]) -> dict[str, Any]:
    return _cache_control(block, {"type": "text", "text": str(block.get("text") or "")})


def _collapsed(parts: list[dict[str, Any]]) -> Any:
    """One plain text part as a string, as before parts existed (every OpenAI-compatible host
    takes a string); several parts stay parts, so each reaches the upstream on its own."""
    if len(parts) == 1 and parts[0].keys() == {"type", "text"}:
        return parts[0]["text"]
    return parts


def _message(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    content = message["content"]
    if message["role"] == "assistant":
        return [_assistant(content, where)]
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    # Tool results answer the previous assistant turn, so they come first.
    out = [
        _tool_result(b, f"{where}.content[{j}]")
        for j, b in enumerate(content)
        if isinstance(b, dict) and b.get("type") == "tool_result"
    ]
    parts = [
        _part(b, f"{where}.content[{j}]")
        for j, b in enumerate(content)
        if isinstance(b, dict) and b.get("type") != "tool_result"
    ]
    parts = [p for p in parts if p is not None]
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _part(block: dict[str, Any], where: str) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return _text_part(block)
    source = block.get("source") or {}
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: must be an object", f"{where}.source")
    if kind in ("image", "document") and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        if kind == "document":
            return _cache_control(block, {"type": "file", "file": {"file_data": url}})
        return _cache_control(block, {"type": "image_url", "image_url": {"url": url}})
    if kind == "image" and source.get("type") == "url":
        part = {"type": "image_url", "image_url": {"url": source.get("url")}}
        return _cache_control(block, part)
    if kind in THINKING_BLOCKS:
        return None
    raise _invalid(f"Content block type {kind!r} is not supported.", where)


def _assistant(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    parts = [_text_part(b) for b in content if isinstance(b, dict) and b.get("type") == "text"]
    message: dict[str, Any] = {"role": "assistant", "content": _collapsed(parts) or None}
    thoughts = [b for b in content if isinstance(b, dict) and b.get("type") in THINKING_BLOCKS]
    if thoughts:  # as LiteLLM carries them; they go back to Claude first, as they were
        message["thinking_blocks"] = thoughts
    calls = [
        _cache_control(
            b,
            {
                "id": b.get("id"),
                "type": "function",
                "function": {
                    "name": b.get("name"),
                    "arguments": orjson.dumps(b.get("input") or {}).decode(),
                },
            },
        )
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A tool message: the result's text, image and document blocks as parts (a string when
    it is one plain text), its `is_error` and `cache_control` carried as they are."""
    content = block.get("content")
    if content is None or isinstance(content, str):
        result: Any = content or ""
    elif isinstance(content, list):
        parts = [
            _part(b, f"{where}.content[{j}]") for j, b in enumerate(content) if isinstance(b, dict)
        ]
        result = _collapsed([p for p in parts if p is not None]) or ""
    else:
        raise _invalid(f"{where}.content: must be a string or a list of blocks", f"{where}.content")
    message = {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result}
    if block.get("is_error") is True:
        message["is_error"] = True
    return _cache_control(block, message)


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if (
        not isinstance(tool, dict)
        or not isinstance(tool.get("name"), str)
        or (tool.get("type") not in (None, "custom"))
    ):
        raise _invalid(
            "Only custom tools with a name and input_schema are supported.", f"tools[{i}]"
        )
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return _cache_control(tool, {"type": "function", "function": function})


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice.get("name"), str):
        mapped: dict[str, Any] = {
            "tool_choice": {"type": "function", "function": {"name": choice["name"]}}
        }
    elif kind in TOOL_CHOICES:
        mapped = {"tool_choice": TOOL_CHOICES[kind]}
    else:
        raise _invalid("tool_choice.type must be auto, any, tool or none.", "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        mapped["parallel_tool_calls"] = False
    return mapped
