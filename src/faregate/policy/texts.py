"""The text a request sends upstream, gathered for content rules: chat messages (string
content, text parts, tool-call arguments), embeddings input, image and completion prompts.
Reads OpenAI-shaped bodies only; never mutates them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _strings(value: Any) -> Iterator[str]:
    """Strings in a str-or-list field; token-id arrays (ints) carry no text to check."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item


def _content(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def _message(message: Any) -> Iterator[str]:
    if not isinstance(message, dict):
        return
    yield from _content(message.get("content"))
    calls = message.get("tool_calls") or []
    legacy = message.get("function_call")
    for call in [*calls, {"function": legacy}] if legacy else calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            yield function["arguments"]


def request_texts(kind: str, body: dict[str, Any]) -> list[str]:
    if kind == "chat":
        texts = [t for m in body.get("messages") or [] for t in _message(m)]
    elif kind in ("embeddings", "moderations"):
        texts = list(_strings(body.get("input")))
    else:  # images, completions
        texts = list(_strings(body.get("prompt")))
    return [t for t in texts if t]
