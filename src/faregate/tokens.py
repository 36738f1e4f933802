"""Fast, dependency-free token estimates, for calls whose provider reports no usage and for
worst-case pricing before a call. They are estimates, never a provider's exact count.

The heuristic is OpenAI's rule of thumb: one token is about four characters of English
text, so a text costs ceil(len(text) / 4) tokens. Code and non-Latin scripts run higher,
so treat these numbers as approximate, not as upper bounds.
"""

from __future__ import annotations

from typing import Any

import orjson

# OpenAI's documented chat framing: each message costs a few tokens of markup around its
# content, and every reply is primed with a few more.
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
# An image part at "high" detail for a 1024x1024 picture in OpenAI's tile arithmetic.
IMAGE_TOKENS = 765


def count_text_tokens(text: str) -> int:
    """ceil(len(text) / 4): about four characters per token."""
    return (len(text) + 3) // 4


def _part_tokens(part: Any) -> int:
    if isinstance(part, str):
        return count_text_tokens(part)
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind in ("image_url", "image", "input_image"):
        return IMAGE_TOKENS
    text = part.get("text") or part.get("refusal")
    return count_text_tokens(text) if isinstance(text, str) else 0


def count_content_tokens(content: Any) -> int:
    """Tokens of an OpenAI message `content`: a string or a list of parts.

    Images count IMAGE_TOKENS each; audio and file parts are not counted.
    """
    if isinstance(content, str):
        return count_text_tokens(content)
    if isinstance(content, list):
        return sum(_part_tokens(part) for part in content)
    return 0


def count_message_tokens(message: dict[str, Any]) -> int:
    """Tokens of one message's text, name and tool calls, without the framing overhead."""
    total = count_content_tokens(message.get("content"))
    name = message.get("name")
    if isinstance(name, str):
        total += count_text_tokens(name)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += count_text_tokens(str(function.get("name") or ""))
            total += count_text_tokens(str(function.get("arguments") or ""))
    return total


def count_chat_input_tokens(body: dict[str, Any]) -> int:
    """Tokens of a chat request: messages (text, tool calls), tool definitions, framing."""
    total = REPLY_OVERHEAD
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            total += MESSAGE_OVERHEAD + count_message_tokens(message)
    tools = body.get("tools")
    if tools:
        total += count_text_tokens(orjson.dumps(tools).decode())
    return total


def count_embedding_input_tokens(input: Any) -> int:
    """Tokens of an embeddings (or moderations) `input`.

    A string, a list of strings, a list of token ids (counted exactly), a list of
    token-id lists, or moderation parts ({"type": "text"|"image_url", ...}).
    """
    if isinstance(input, str):
        return count_text_tokens(input)
    if not isinstance(input, list) or not input:
        return 0
    if all(isinstance(item, int) for item in input):
        return len(input)
    total = 0
    for item in input:
        if isinstance(item, list):
            total += len(item)
        else:
            total += _part_tokens(item)
    return total
