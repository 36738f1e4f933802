"""Request mapping of the OpenAI adapter for a canonical body the inbound Messages API made
(`FROM_MESSAGES_API`): the Anthropic fields an OpenAI-wire upstream would refuse are dropped
or mapped here. Pure functions; bodies from `/v1/chat/completions` never come here.
"""

from __future__ import annotations

from typing import Any

from faregate.providers.shape import FROM_MESSAGES_API, invalid

# Top-level fields the Messages API carries that OpenAI refuses. `top_k` too: an OpenAI
# client that sends it as an extra field still reaches the host with it, as before.
# `thinking` and `output_config` (its effort) are dropped, not mapped to `reasoning_effort`:
# OpenAI refuses that on a model that does not reason, and which ones reason is not known here.
ANTHROPIC_ONLY = (FROM_MESSAGES_API, "cache_control", "top_k", "thinking", "output_config")
# What a tool result that reports an error (`is_error`) begins with on the OpenAI wire.
ERROR_NOTE = "Error:"


def from_messages_api(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` (a copy the adapter owns) without Anthropic's own fields."""
    for key in ANTHROPIC_ONLY:
        payload.pop(key, None)
    payload["messages"] = [
        _tool_message(m, f"messages[{i}]") if m.get("role") == "tool" else _message(m)
        for i, m in enumerate(payload.get("messages") or ())
    ]
    if payload.get("tools"):
        payload["tools"] = [_without_cache_control(tool) for tool in payload["tools"]]
    return payload


def _without_cache_control(item: dict[str, Any]) -> dict[str, Any]:
    if "cache_control" not in item:
        return item
    return {k: v for k, v in item.items() if k != "cache_control"}


def _text_or_parts(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Text blocks as one string, the blocks a paragraph each; other parts (an image) as a
    list. Many OpenAI-compatible hosts take a message's content only as a string (DeepSeek:
    "invalid type: sequence, expected a string"), and OpenAI reads both alike."""
    if all(part.get("type") == "text" for part in parts):
        return "\n\n".join(str(part.get("text") or "") for part in parts)
    return [_without_cache_control(part) for part in parts]


def _message(message: dict[str, Any]) -> dict[str, Any]:
    message = _without_cache_control(message)
    if "thinking_blocks" in message:  # Claude's, to go back to Claude only
        message = {k: v for k, v in message.items() if k != "thinking_blocks"}
    content = message.get("content")
    if isinstance(content, list):
        message = {**message, "content": _text_or_parts(content)}
    if message.get("tool_calls"):
        message = {
            **message,
            "tool_calls": [_without_cache_control(c) for c in message["tool_calls"]],
        }
    return message


def _tool_message(message: dict[str, Any], where: str) -> dict[str, Any]:
    """OpenAI takes only text in a tool message and has no `is_error`: an image or document
    in a tool result is refused, naming it; an error is noted in the text."""
    message = _message(message)
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if part.get("type") != "text":
                raise invalid(
                    "This model takes only text in a tool result, not an image or a document.",
                    f"{where}.content[{j}]",
                )
    if message.pop("is_error", None) is True:
        message["content"] = f"{ERROR_NOTE} {message.get('content') or ''}".rstrip()
    return message
