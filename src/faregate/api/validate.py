"""Validation of OpenAI-shaped request bodies: cheap hand-written checks that name the bad
field in `param`. Unknown fields are kept and passed through to OpenAI-compatible upstreams."""

from __future__ import annotations

from typing import Any

from faregate.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
# OpenAI's: the GPT image models' (low to max, auto) and the DALL·E models' (standard, hd).
# A quality a price table has no column for is priced at the dearest (pricing.images).
_IMAGE_QUALITIES = frozenset({"standard", "hd", "low", "medium", "high", "xhigh", "max", "auto"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(f"'{name}' must be a number between {lo} and {hi}.", name)


def _positive_int(body: dict[str, Any], name: str, hi: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (hi and value > hi):
        limit = f" and at most {hi}" if hi else ""
        raise _fail(f"'{name}' must be an integer of at least 1{limit}.", name)


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' is required and must be a string.",
            param="model",
            code="missing_required_parameter" if model is None else "invalid_value",
        )
    return model


# What each kind of content part carries under its own name: a string or an object.
_PART_VALUES: dict[str, type] = {
    "text": str,
    "refusal": str,
    "image_url": dict,
    "input_audio": dict,
    "file": dict,
}


def _content(content: Any, where: str) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail("Message content must be a string or a list of content parts.", where)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            raise _fail("Each content part must be an object with a known 'type'.", f"{where}[{j}]")
        kind = part["type"]
        if not isinstance(part.get(kind), _PART_VALUES[kind]):
            shape = "a string" if _PART_VALUES[kind] is str else "an object"
            raise _fail(f"A {kind} part needs '{kind}', {shape}.", f"{where}[{j}].{kind}")
        if kind == "image_url" and not isinstance(part["image_url"].get("url"), str):
            raise _fail("An image_url part needs 'image_url.url'.", f"{where}[{j}].image_url")


def _tool_calls(calls: Any, where: str) -> None:
    """An assistant message's `tool_calls`: each with an `id` and a `function` whose `name`
    and `arguments` (the JSON text) are strings, as OpenAI requires."""
    if calls is None:
        return
    if not isinstance(calls, list):
        raise _fail("'tool_calls' must be an array.", where)
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(fn, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), str)
        ):
            raise _fail(
                "Each tool call needs an 'id' and a 'function' with 'name' and 'arguments' "
                "(strings).",
                f"{where}[{k}]",
            )


def _messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "'messages' must be a non-empty array.",
            param="messages",
            code="missing_required_parameter" if messages is None else "invalid_value",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail("Each message must be an object.", f"messages[{i}]")
        if message.get("role") not in _ROLES:
            raise _fail(f"Invalid role {message.get('role')!r}.", f"messages[{i}].role")
        _content(message.get("content"), f"messages[{i}].content")
        _tool_calls(message.get("tool_calls"), f"messages[{i}].tool_calls")
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail("A tool message needs 'tool_call_id'.", f"messages[{i}].tool_call_id")


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _fail("'tools' must be an array.", "tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _fail("Each tool needs 'function.name'.", f"tools[{i}].function.name")
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            where = f"tools[{i}].function.description"
            raise _fail(f"'{where}' must be a string.", where)
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            where = f"tools[{i}].function.parameters"
            raise _fail(f"'{where}' must be an object (a JSON Schema).", where)


def _object(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise _fail(f"'{name}' must be an object.", name)
    return value


def _response_format(body: dict[str, Any]) -> None:
    """OpenAI's shapes: `{"type": "text" | "json_object"}`, or `{"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}}}`. Every adapter reads it."""
    spec = _object(body, "response_format")
    if spec is None:
        return
    if spec.get("type") not in _RESPONSE_FORMATS:
        raise _fail(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            "response_format.type",
        )
    if spec["type"] != "json_schema":
        return
    schema = spec.get("json_schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
        raise _fail(
            "'response_format.json_schema' must be an object with a 'name'.",
            "response_format.json_schema",
        )
    if schema.get("schema") is not None and not isinstance(schema["schema"], dict):
        raise _fail(
            "'response_format.json_schema.schema' must be an object.",
            "response_format.json_schema.schema",
        )


def chat_request(body: dict[str, Any], *, stop_limit: int | None = 4) -> str:
    """Validate a chat.completions body in place; return the model asked for. `stop_limit`:
    OpenAI's 4 stop sequences (None for the Messages API, which sets no such limit; an
    upstream that has one refuses more itself)."""
    model = _model(body)
    _messages(body)
    _tools(body)
    if "stream" in body and not isinstance(body["stream"], bool):
        if body["stream"] is not None:
            raise _fail("'stream' must be a boolean.", "stream")
        del body["stream"]  # null: not streamed, as the SDKs' Optional[Literal[False]] means
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _positive_int(body, "n", 128)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    stop = body.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (
            isinstance(stop, list)
            and (stop_limit is None or len(stop) <= stop_limit)
            and all(isinstance(s, str) for s in stop)
        )
    ):
        limit = "a list of strings" if stop_limit is None else f"up to {stop_limit} strings"
        raise _fail(f"'stop' must be a string or {limit}.", "stop")
    _object(body, "metadata")
    _object(body, "stream_options")
    _response_format(body)
    return model


def embeddings_request(body: dict[str, Any]) -> str:
    model = _model(body)
    value = body.get("input")
    ok = isinstance(value, str) or (
        isinstance(value, list) and value and all(isinstance(v, (str | int, list)) for v in value)
    )
    if not ok:
        raise InvalidRequest(
            "'input' must be a string or a non-empty array.",
            param="input",
            code="missing_required_parameter" if value is None else "invalid_value",
        )
    _positive_int(body, "dimensions")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise _fail("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    return model


def moderations_request(body: dict[str, Any]) -> str:
    """`model` may be left out (the caller picks the default moderation model): returns ""."""
    value = body.get("input")
    ok = isinstance(value, str) or (isinstance(value, list) and value)
    if not ok:
        raise InvalidRequest(
            "'input' must be a string or a non-empty array.",
            param="input",
            code="missing_required_parameter" if value is None else "invalid_value",
        )
    return _model(body) if "model" in body else ""


def parse_size(size: Any) -> tuple[int, int]:
    if not isinstance(size, str):
        raise _fail("'size' must be a string like '1024x1024'.", "size")
    width, sep, height = size.lower().partition("x")
    if (
        not sep
        or not (width.isascii() and width.isdigit())  # isdigit() alone takes '²'
        or not (height.isascii() and height.isdigit())
        or not 0 < int(width) <= 8192
        or not 0 < int(height) <= 8192
    ):
        raise _fail("'size' must be a string like '1024x1024'.", "size")
    return int(width), int(height)


def images_request(body: dict[str, Any]) -> str:
    model = _model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest(
            "'prompt' is required.", param="prompt", code="missing_required_parameter"
        )
    _positive_int(body, "n", 10)
    _positive_int(body, "steps", 500)
    for name in ("size", "quality", "response_format"):
        if name in body and body[name] is None:
            del body[name]  # null: the default, as the SDKs send an Optional left unset
    if "size" in body and body["size"] != "auto":
        parse_size(body["size"])
    if body.get("quality") is not None and body["quality"] not in _IMAGE_QUALITIES:
        raise _fail(f"'quality' must be one of {sorted(_IMAGE_QUALITIES)}.", "quality")
    if body.get("response_format", "url") not in ("url", "b64_json"):
        raise _fail("'response_format' must be 'url' or 'b64_json'.", "response_format")
    return model
