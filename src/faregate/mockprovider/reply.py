"""What the mock answers, before any wire format shapes it: text, tool call or JSON, and usage.

Output tokens are `min(max_tokens, behaviour.output_tokens)` per choice; a plain-text reply
holds exactly that many word tokens (fewer when a stop sequence cuts it), minus the half a
reasoning model spends thinking. Tool calls and JSON replies report the same count whatever
their length. Streamed and whole replies come from the same plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from faregate.mockprovider.tokens import cached_tokens, is_reasoning_model, word_pieces

# Finish kinds, mapped by each wire format to its own vocabulary.
STOP = "stop"
LENGTH = "length"
STOP_SEQUENCE = "stop_sequence"
TOOL = "tool"

_JSON_PIECE = 8
THOUGHT_OFFSET = 17  # thoughts are other words than the reply's


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    digest: str

    def call_id(self, prefix: str) -> str:
        """A stable id: the same request always yields the same tool call id."""
        return prefix + self.digest

    @property
    def arguments_json(self) -> str:
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True, slots=True)
class Choice:
    pieces: tuple[str, ...]
    finish: str
    stop_sequence: str | None = None
    tool: ToolCall | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Reply:
    choices: tuple[Choice, ...]
    prompt_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Ask:
    """The parts of a request that shape the reply, in wire-neutral terms."""

    model: str
    prompt_tokens: int
    max_tokens: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    tool: ToolCall | None = None
    # None: plain text; {}: any JSON object; otherwise a JSON schema to satisfy.
    json_schema: Mapping[str, Any] | None = None
    # Tokens the request lets the model think (Anthropic's thinking budget, Gemini's
    # thinkingBudget; 0: no thinking); None: as the model does by default (a reasoning
    # model thinks). A model never thinks more than half of its output.
    thinking: int | None = None


def plan_reply(ask: Ask, output_tokens: int) -> Reply:
    """Decide every choice's content and the usage the provider reports for them."""
    budget = output_tokens if ask.max_tokens is None else min(ask.max_tokens, output_tokens)
    truncated = ask.max_tokens is not None and ask.max_tokens < output_tokens
    thinking = budget // 2 if is_reasoning_model(ask.model) else 0
    if ask.thinking is not None:
        thinking = min(ask.thinking, budget // 2)
    choices = []
    spent = 0
    for index in range(ask.n):
        if ask.tool is not None:
            choice = Choice((), TOOL, tool=ask.tool)
            spent += budget
        elif ask.json_schema is not None:
            choice = Choice(_json_pieces(ask.json_schema, budget - thinking), STOP)
            spent += budget
        else:
            choice = _text_choice(budget - thinking, index, ask.stop, truncated)
            spent += len(choice.pieces) + thinking
        choices.append(choice)
    return Reply(
        choices=tuple(choices),
        prompt_tokens=ask.prompt_tokens,
        output_tokens=spent,
        reasoning_tokens=thinking * ask.n,
        cached_tokens=cached_tokens(ask.prompt_tokens),
    )


def thought_pieces(count: int) -> tuple[str, ...]:
    """The text of `count` tokens of thinking (one word a token), for wire formats that show
    the model's thoughts."""
    return word_pieces(count, THOUGHT_OFFSET)


def _text_choice(count: int, offset: int, stop: Sequence[str], truncated: bool) -> Choice:
    pieces = word_pieces(count, offset)
    if stop:
        cut, matched = _cut_at_stop(pieces, stop)
        if matched is not None:
            return Choice(cut, STOP_SEQUENCE, stop_sequence=matched)
    return Choice(pieces, LENGTH if truncated else STOP)


def _cut_at_stop(
    pieces: tuple[str, ...], stop: Sequence[str]
) -> tuple[tuple[str, ...], str | None]:
    text = "".join(pieces)
    hits = [(text.find(s), s) for s in stop if s and s in text]
    if not hits:
        return pieces, None
    at, matched = min(hits)
    kept: list[str] = []
    end = 0
    for piece in pieces:
        if end + len(piece) <= at:
            kept.append(piece)
            end += len(piece)
            continue
        if at > end:
            kept.append(piece[: at - end])
        break
    return tuple(kept), matched


def _json_pieces(schema: Mapping[str, Any], words: int) -> tuple[str, ...]:
    value = sample_value(schema) if schema else {"reply": "".join(word_pieces(max(words, 1)))}
    text = orjson.dumps(value).decode()
    return tuple(text[i : i + _JSON_PIECE] for i in range(0, len(text), _JSON_PIECE))


def tool_call(name: str, schema: Mapping[str, Any] | None, seed_text: str) -> ToolCall:
    """The call the mock makes to tool `name`: placeholders for the schema's required fields."""
    arguments = sample_value(schema or {"type": "object"})
    if not isinstance(arguments, dict):
        arguments = {}
    digest = hashlib.sha256(f"{name}\x00{seed_text}".encode()).hexdigest()[:24]
    return ToolCall(name=name, arguments=arguments, digest=digest)


def sample_value(schema: Any) -> Any:
    """A placeholder value that satisfies a (JSON or Gemini) schema's type and required keys.
    A part that is not what JSON Schema says it is (a malformed schema) is taken loosely:
    the mock answers with a placeholder, never fails."""
    if not isinstance(schema, Mapping):
        return "mock"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return sample_value(options[0])
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()
    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = schema.get("required")
        keys = [k for k in required if isinstance(k, str)] if isinstance(required, list) else []
        return {key: sample_value(props.get(key) or {}) for key in keys}
    if kind == "array":
        least = schema.get("minItems")
        wanted = isinstance(least, int) and not isinstance(least, bool) and least > 0
        return [sample_value(schema.get("items") or {})] if wanted else []
    return _SCALARS.get(kind, "mock")


_SCALARS: dict[str, Any] = {
    "string": "mock",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "null": None,
}
