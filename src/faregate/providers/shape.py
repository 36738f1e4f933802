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


# Gemini wants the thought signatures of its function calls back on the next turn; they
# travel to the client inside faregate's tool call id ("call_" + hex), after this separator
# (found in neither the id nor base64; gemini_request). Other providers get the id without it: OpenAI takes ids
# of at most 40 characters, Anthropic only letters, digits, "_" and "-", and a signature is
# hundreds of base64 characters.
SIGNATURE_SEPARATOR = "."


def plain_call_id(call_id: Any) -> Any:
    """A tool call id without the Gemini signature faregate put in it, if any."""
    if isinstance(call_id, str) and call_id.startswith("call_"):
        return call_id.partition(SIGNATURE_SEPARATOR)[0]
    return call_id


def _signed(call_id: Any) -> bool:
    return (
        isinstance(call_id, str) and call_id.startswith("call_") and SIGNATURE_SEPARATOR in call_id
    )


def unsigned_messages(messages: list[Any]) -> list[Any]:
    """`messages` with every tool call id, and every tool message's reference to one, without
    its Gemini signature: the same list when none has one, else a new list in which the
    messages that had one are copies (the client's body is left as it was)."""
    changed: list[Any] | None = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        signed_calls = isinstance(calls, list) and any(
            isinstance(c, dict) and _signed(c.get("id")) for c in calls
        )
        signed_ref = _signed(message.get("tool_call_id"))
        if not (signed_calls or signed_ref):
            continue
        copy = dict(message)
        if signed_calls:
            copy["tool_calls"] = [
                {**c, "id": plain_call_id(c["id"])}
                if isinstance(c, dict) and _signed(c.get("id"))
                else c
                for c in calls
            ]
        if signed_ref:
            copy["tool_call_id"] = plain_call_id(message["tool_call_id"])
        if changed is None:
            changed = list(messages)
        changed[i] = copy
    return messages if changed is None else changed


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
    for, as LiteLLM reports them (`cache_creation_input_tokens`, part of prompt_tokens, and
    by lifetime in `prompt_tokens_details.cache_creation_token_details`)."""
    body: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }
    if usage.cache_write_tokens:
        body["cache_creation_input_tokens"] = usage.cache_write_tokens
        body["prompt_tokens_details"]["cache_creation_token_details"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        }
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
