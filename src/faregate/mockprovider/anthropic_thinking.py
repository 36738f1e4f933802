"""Anthropic extended thinking in the mock: the request's `thinking` checked as the Messages
API checks it, thinking blocks signed so that the mock can tell a block it made from an
altered one, and the thinking blocks a conversation passes back checked. No I/O here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.reply import thought_pieces

MIN_BUDGET = 1024
# Anthropic's documented test string: a prompt holding it is answered with redacted thinking.
REDACTED_TRIGGER = (
    "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
)
# Anthropic's error messages for sampling a thinking request cannot take.
_CONSIDERATIONS = (
    "Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/"
    "extended-thinking#important-considerations-when-using-extended-thinking"
)
MIN_TOP_P = 0.95
_SIGNED = b"mock-thinking\x00"
_REDACTED = b"mock-redacted\x00"
THINKING_BLOCKS = ("thinking", "redacted_thinking")


@dataclass(frozen=True, slots=True)
class Thinking:
    budget: int  # tokens the model may think
    shown: bool  # False with `display: omitted`: the block keeps only its signature
    redacted: bool  # the prompt asked for redacted thinking (REDACTED_TRIGGER)


def parse(body: Mapping[str, Any], max_tokens: int) -> Thinking | None:
    """The request's thinking, None when it does not think (absent, disabled)."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise MockError(400, "thinking: Input should be a valid dictionary", param="thinking")
    kind = thinking.get("type")
    if kind in ("disabled", "between_tools"):
        return None
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise MockError(400, "thinking.enabled.budget_tokens: Field required")
        if budget < MIN_BUDGET:
            raise MockError(
                400,
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
            )
        if budget >= max_tokens:
            raise MockError(400, "`max_tokens` must be greater than `thinking.budget_tokens`.")
    elif kind == "adaptive":
        budget = max_tokens
    else:
        raise MockError(
            400,
            f"thinking: Input tag {kind!r} found using 'type' does not match any of the "
            "expected tags: 'enabled', 'disabled', 'adaptive', 'between_tools'",
        )
    check_sampling(body)
    redacted = REDACTED_TRIGGER in orjson.dumps(body.get("messages")).decode()
    return Thinking(budget, thinking.get("display") != "omitted", redacted)


def check_sampling(body: Mapping[str, Any]) -> None:
    """While thinking (enabled or adaptive), Claude takes temperature only at 1, no top_k,
    and top_p only from 0.95 to 1."""
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise MockError(
            400,
            "`temperature` may only be set to 1 when thinking is enabled or in adaptive "
            f"mode. {_CONSIDERATIONS}",
            param="temperature",
        )
    if body.get("top_k") is not None:
        raise MockError(
            400, f"`top_k` must be unset when thinking is enabled. {_CONSIDERATIONS}", param="top_k"
        )
    top_p = body.get("top_p")
    if top_p is not None and top_p < MIN_TOP_P:
        raise MockError(
            400,
            f"`top_p` must be greater than or equal to {MIN_TOP_P} or unset when thinking is "
            f"enabled. {_CONSIDERATIONS}",
            param="top_p",
        )


def signature(text: str) -> str:
    """An opaque base64 signature of a few hundred characters, as Claude's are."""
    return base64.b64encode(_SIGNED + hashlib.sha256(text.encode()).digest() * 8).decode()


def block(thinking: Thinking, tokens: int) -> dict[str, Any]:
    """The content block of `tokens` tokens of thinking."""
    text = "".join(thought_pieces(tokens))
    if thinking.redacted:
        data = base64.b64encode(_REDACTED + hashlib.sha256(text.encode()).digest() * 8)
        return {"type": "redacted_thinking", "data": data.decode()}
    return {
        "type": "thinking",
        "thinking": text if thinking.shown else "",
        "signature": signature(text),
    }


def check_history(messages: list[Any], thinking: Thinking | None) -> None:
    """Every thinking block passed back must be one the mock made, unchanged; while thinking,
    the last assistant turn that uses a tool must open with its thinking, as Claude's
    answer did."""
    last_tool_turn: tuple[int, list[Any]] | None = None
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for j, item in enumerate(content):
            if isinstance(item, dict) and item.get("type") in THINKING_BLOCKS:
                _check_block(item, f"messages.{i}.content.{j}")
        if any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content):
            last_tool_turn = (i, content)
    if thinking is None or last_tool_turn is None:
        return
    i, content = last_tool_turn
    first = content[0].get("type") if content and isinstance(content[0], dict) else None
    if first not in THINKING_BLOCKS:
        raise MockError(
            400,
            f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
            f"found `{first}`. When `thinking` is enabled, a final `assistant` message must "
            "start with a thinking block.",
        )


def _check_block(item: dict[str, Any], where: str) -> None:
    if item["type"] == "redacted_thinking":
        if not _opaque(item.get("data"), _REDACTED):
            raise MockError(400, f"{where}.data: Invalid `data` in `redacted_thinking` block")
        return
    text, sig = item.get("thinking"), item.get("signature")
    if not isinstance(text, str) or not _opaque(sig, _SIGNED) or (text and sig != signature(text)):
        raise MockError(400, f"{where}: Invalid `signature` in `thinking` block")


def _opaque(value: Any, prefix: bytes) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return base64.b64decode(value, validate=True).startswith(prefix)
    except ValueError:
        return False
