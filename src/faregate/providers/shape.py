"""Helpers over the canonical OpenAI chat shape for adapters that translate it to another
wire format: reading messages and parts, and building chat.completion(.chunk) bodies.
No provider's wire names belong here.
"""

from __future__ import annotations

from typing import Any

import orjson

from faregate.providers.base import ProviderError
from faregate.usage import Usage

# Set on the canonical body the inbound Messages API makes. Such a body may carry Anthropic's
# own fields (`cache_control` on parts, tools, tool calls, tool messages and the body; a
# tool message's `is_error`; `top_k`),
# which the Anthropic adapter sends and the OpenAI adapter maps or drops: an OpenAI-wire
# upstream would refuse them. A key rather
# than a walk of every body, so `/v1/chat/completions` bodies pay one dict lookup.
FROM_MESSAGES_API = "faregate_messages_api"


def invalid(message: str, param: str | None = None) -> ProviderError:
    """A request this wire format cannot carry: the client's fault, never retried."""
    return ProviderError(
        message,
        status=400,
        code="invalid_request",
        type="invalid_request_error",
        param=param,
        retryable=False,
    )


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL, else None."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", data


def content_parts(content: Any) -> list[dict[str, Any]]:
    """A message `content` as a list of parts (a plain string becomes one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [part for part in content if isinstance(part, dict)]
    raise invalid("Message content must be a string or a list of parts.")


def content_text(content: Any) -> str:
    """The text of a message `content`, its text parts a line apart (not glued together)."""
    if isinstance(content, str):
        return content
    return "\n".join(
        str(part.get("text") or "") for part in content_parts(content) if part.get("type") == "text"
    )


def tool_arguments(raw: Any, param: str) -> dict[str, Any]:
    """A tool call's `arguments` (a JSON object encoded as a string) as a dict."""
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        raise invalid("Tool call arguments must be a JSON object.", param) from None
    if not isinstance(value, dict):
        raise invalid("Tool call arguments must be a JSON object.", param)
    return value


def max_output_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    return int(value) if value is not None else None


def stop_sequences(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    return [str(s) for s in stop]


def openai_usage(usage: Usage) -> dict[str, Any]:
    """A Usage in OpenAI's inclusive `usage` shape; cache writes, which OpenAI has no name
    for, as LiteLLM reports them (`cache_creation_input_tokens`, part of prompt_tokens)."""
    body = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.cache_write_tokens:
        body["cache_creation_input_tokens"] = usage.cache_write_tokens
    return body


def completion(
    id: str, model: str, created: int, choices: list[dict[str, Any]], usage: Usage
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": openai_usage(usage),
    }


def chunk(
    id: str,
    model: str,
    created: int,
    choices: list[dict[str, Any]],
    usage: Usage | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return body


def delta_choice(
    index: int, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def tool_call(id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def unsupported(operation: str) -> ProviderError:
    """This wire format has no such call; another deployment of the model may have it."""
    return ProviderError(
        f"This deployment does not support {operation}.",
        status=400,
        code="model_not_supported",
        type="invalid_request_error",
        retryable=True,
    )
