"""Request mapping of the Anthropic adapter: an OpenAI chat body becomes a Messages API
request. Pure functions; a body the Messages API cannot carry raises a 400 ProviderError.
"""

from __future__ import annotations

from typing import Any

from faregate.providers.base import ProviderError
from faregate.providers.shape import (
    content_parts,
    invalid,
    max_output_tokens,
    parse_data_url,
    plain_call_id,
    stop_sequences,
    tool_arguments,
)

TOOL_CHOICES = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
MAX_TEMPERATURE = 1
# OpenAI's reasoning_effort as a thinking budget: LiteLLM's budgets for low, medium and
# high, Claude's least (1,024) for minimal, and twice as much a step above high. `none` is
# no thinking: the request is sent without `thinking`.
THINKING_BUDGETS = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
MIN_THINKING = 1024
# OpenAI's reasoning_effort as the Messages API's `output_config.effort`, for models that
# think adaptively (`thinking: adaptive` on the provider): the same names, `minimal` as the
# least Claude has.
EFFORTS = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}
# While thinking, Claude samples at temperature 1 and refuses top_k, and a top_p under
# this (extended thinking's "important considerations").
MIN_THINKING_TOP_P = 0.95


def messages_request(
    body: dict[str, Any],
    model: str,
    *,
    default_max_tokens: int,
    stream: bool,
    adaptive: bool = False,
) -> dict[str, Any]:
    """The Messages request for an OpenAI chat body. `adaptive`: reasoning_effort becomes
    adaptive thinking at that effort, not a thinking budget (the provider's models take
    only that, as Claude Opus 4.7 and later do)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid("This model returns one choice per request; 'n' must be 1.", "n")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise unsupported_parameter(
            "This model does not return log probabilities; 'logprobs' and 'top_logprobs' "
            "cannot be honoured.",
            "logprobs" if body.get("logprobs") else "top_logprobs",
        )
    system, messages = map_messages(body.get("messages") or [])
    request: dict[str, Any] = {
        "model": model,
        "max_tokens": max_output_tokens(body) or default_max_tokens,
        "messages": messages,
    }
    if system:
        request["system"] = system
    if stream:
        request["stream"] = True
    stop = stop_sequences(body.get("stop"))
    if stop:
        request["stop_sequences"] = stop
    for key in ("temperature", "top_p", "top_k"):  # top_k: an extra field for OpenAI clients
        if body.get(key) is not None:
            request[key] = body[key]
    temperature = request.get("temperature")
    if isinstance(temperature, int | float) and temperature > MAX_TEMPERATURE:
        # OpenAI's scale goes to 2, Anthropic's to 1, which it refuses to pass: the most
        # random Claude samples, so a group mixing both serves the request on either.
        request["temperature"] = MAX_TEMPERATURE
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    if body.get("cache_control"):
        request["cache_control"] = body["cache_control"]
    output_config = _output_config(body)
    if isinstance(body.get("thinking"), dict):  # the Messages API's, or an extra field
        request["thinking"] = body["thinking"]
    elif body.get("reasoning_effort") is not None:
        effort = body["reasoning_effort"]
        if adaptive:
            thinking = adaptive_thinking(effort)
            if thinking is not None:
                output_config.setdefault("effort", EFFORTS[effort])
        else:
            thinking = thinking_for_effort(effort, request["max_tokens"])
        if thinking is not None:
            request["thinking"] = thinking
            sample_for_thinking(request)
    output_format = map_response_format(body.get("response_format"))
    if output_format is not None:
        output_config["format"] = output_format
    if output_config:
        request["output_config"] = output_config
    if body.get("tools"):
        request["tools"] = [map_tool(tool, i) for i, tool in enumerate(body["tools"])]
        choice = map_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice:
            request["tool_choice"] = choice
    return request


def unsupported_parameter(message: str, param: str) -> ProviderError:
    """A parameter this wire format has no way to honour, refused rather than dropped (as
    LiteLLM refuses it unless told to drop it): OpenAI's `unsupported_parameter`."""
    return ProviderError(
        message,
        status=400,
        code="unsupported_parameter",
        type="invalid_request_error",
        param=param,
        retryable=False,
    )


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    """The body's `output_config.effort` (the Messages API's, or an extra field), the only
    part of it carried as is: its `format` arrives as OpenAI's response_format."""
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    return {"effort": effort} if effort is not None else {}


def sample_for_thinking(request: dict[str, Any]) -> None:
    """Thinking the gateway turned on (from reasoning_effort) leaves out what Claude refuses
    while thinking: a temperature other than 1 (it samples at 1), top_k, and a top_p under
    0.95, which becomes 0.95. A client that asks for `thinking` itself gets Claude's 400."""
    if request.get("temperature") not in (None, 1):
        del request["temperature"]
    request.pop("top_k", None)
    top_p = request.get("top_p")
    if isinstance(top_p, int | float) and top_p < MIN_THINKING_TOP_P:
        request["top_p"] = MIN_THINKING_TOP_P


def adaptive_thinking(effort: Any) -> dict[str, Any] | None:
    """OpenAI's `reasoning_effort` as adaptive thinking (its effort goes in
    `output_config.effort`, EFFORTS); None for `none`; an unknown effort is refused."""
    if effort == "none":
        return None
    if not isinstance(effort, str) or effort not in EFFORTS:
        choices = ", ".join(["none", *EFFORTS])
        raise invalid(f"reasoning_effort must be one of {choices}.", "reasoning_effort")
    return {"type": "adaptive"}


def thinking_for_effort(effort: Any, max_tokens: int) -> dict[str, Any] | None:
    """OpenAI's `reasoning_effort` as extended thinking: a budget by effort (see
    THINKING_BUDGETS), kept below `max_tokens` as Claude requires; None for `none`. A
    `max_tokens` that leaves no room for Claude's least budget is refused, naming it."""
    if effort == "none":
        return None
    budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        choices = ", ".join(["none", *THINKING_BUDGETS])
        raise invalid(f"reasoning_effort must be one of {choices}.", "reasoning_effort")
    if max_tokens <= MIN_THINKING:
        raise invalid(
            f"With reasoning_effort this model thinks at least {MIN_THINKING} tokens, which "
            "count towards max_tokens: max_tokens must be above that.",
            "max_tokens",
        )
    return {"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)}


def map_response_format(spec: Any) -> dict[str, Any] | None:
    """OpenAI's `response_format` as structured outputs' `output_config.format` (generally
    available, no beta header). The Messages API constrains output only to a schema: JSON
    mode without one (`json_object`) cannot be honoured, so it is refused, not ignored."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind in (None, "text"):
        return None
    if kind == "json_schema":
        schema = (spec.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"type": "json_schema", "schema": schema}
        raise invalid(
            "This model needs a schema for JSON output (response_format.json_schema.schema).",
            "response_format.json_schema.schema",
        )
    raise invalid(
        f"response_format type {kind!r} is not supported by this model: it constrains output "
        "only to a schema (type 'json_schema').",
        "response_format.type",
    )


def map_tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        raise invalid("Only function tools are supported.", f"tools[{i}]")
    mapped: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        mapped["description"] = function["description"]
    if tool.get("cache_control"):
        mapped["cache_control"] = tool["cache_control"]
    return mapped


def map_tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    mapped: dict[str, Any] | None
    if choice is None:
        mapped = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise invalid(f"Unknown tool_choice {choice!r}.", "tool_choice")
        mapped = dict(TOOL_CHOICES[choice])
    else:
        name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str):
            raise invalid("tool_choice must name a function.", "tool_choice")
        mapped = {"type": "tool", "name": name}
    if mapped is not None and parallel is False and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    return mapped


def map_messages(messages: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """(system, messages): system and developer turns go to the top-level `system`;
    consecutive tool results become one user turn of tool_result blocks."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    tool_turn: dict[str, Any] | None = None
    for i, message in enumerate(messages):
        role = message.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content"), f"{where}.content"))
            continue
        if role == "tool":
            if tool_turn is None:
                tool_turn = {"role": "user", "content": []}
                out.append(tool_turn)
            tool_turn["content"].append(_tool_result(message, where))
            continue
        tool_turn = None
        if role == "user":
            out.append({"role": "user", "content": _user_content(message.get("content"), where)})
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            if blocks:
                out.append({"role": "assistant", "content": blocks})
        else:
            raise invalid(f"Role {role!r} is not supported by this model.", f"{where}.role")
    return _system(system), out


def _system(blocks: list[dict[str, Any]]) -> Any:
    """One block as a string; several (or any with cache_control) as blocks, each apart.
    Empty text blocks are left out: the Messages API refuses them."""
    blocks = [block for block in blocks if block.get("type") != "text" or block["text"]]
    if len(blocks) == 1 and not blocks[0].get("cache_control"):
        return blocks[0]["text"]
    return blocks or None


def _user_content(content: Any, where: str) -> Any:
    if isinstance(content, str):
        return content
    return _blocks(content, f"{where}.content")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    blocks = []
    for j, part in enumerate(content_parts(content)):
        block = _block(part, f"{where}[{j}]")
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def _block(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "refusal":  # an earlier assistant refusal: what it said is the turn's text
        return {"type": "text", "text": str(part.get("refusal") or "")}
    if kind == "image_url":
        return {
            "type": "image",
            "source": _source(str((part.get("image_url") or {}).get("url")), where),
        }
    if kind == "file":
        data = parse_data_url(str((part.get("file") or {}).get("file_data") or ""))
        if data is not None:
            return {
                "type": "document",
                "source": {"type": "base64", "media_type": data[0], "data": data[1]},
            }
    raise invalid(f"Content part type {kind!r} is not supported by this model.", where)


def _source(url: str, where: str) -> dict[str, Any]:
    data = parse_data_url(url)
    if data is not None:
        return {"type": "base64", "media_type": data[0], "data": data[1]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise invalid("An image must be a data: URL or an http(s) URL.", where)


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The turn's thinking blocks (`thinking_blocks`, as the adapter answered them), to go
    back first and unchanged: Claude checks their signatures. A block without a signature
    (another provider's thoughts) cannot be checked and is left out."""
    blocks = []
    for block in message.get("thinking_blocks") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking" and block.get("signature"):
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": block.get("thinking") or "",
                    "signature": block["signature"],
                }
            )
        elif kind == "redacted_thinking" and block.get("data"):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return blocks


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _thinking_blocks(message) if message.get("thinking_blocks") else []
    blocks += [
        block
        for block in _blocks(_assistant_content(message), f"{where}.content")
        if block.get("type") != "text" or block["text"]
    ]
    for k, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        block = {
            "type": "tool_use",
            "id": plain_call_id(call.get("id")),
            "name": function.get("name"),
            "input": tool_arguments(function.get("arguments"), f"{where}.tool_calls[{k}]"),
        }
        if call.get("cache_control"):
            block["cache_control"] = call["cache_control"]
        blocks.append(block)
    return blocks


def _assistant_content(message: dict[str, Any]) -> Any:
    """An assistant message's content; its `refusal` (as OpenAI answered it) when it has no
    content, so the turn keeps what it said."""
    content = message.get("content")
    refusal = message.get("refusal")
    if not content and isinstance(refusal, str) and refusal:
        return refusal
    return content


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    content = message.get("content")
    result: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": plain_call_id(message.get("tool_call_id")),
    }
    if isinstance(content, str):
        result["content"] = content
    elif content is not None:
        result["content"] = _blocks(content, f"{where}.content")
    if message.get("is_error") is True:
        result["is_error"] = True
    if message.get("cache_control"):
        result["cache_control"] = message["cache_control"]
    return result
