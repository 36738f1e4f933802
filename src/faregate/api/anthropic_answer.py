"""The Anthropic Messages answers, as pure functions: a chat completion (whole or streamed)
becomes a Messages answer, and an error Anthropic's error body, whatever provider served
it. The requests coming in are api.anthropic_wire's. No I/O and no HTTP framework here.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from faregate.usage import Usage

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
Event = tuple[str, dict[str, Any]]


def _message_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id:
        return (
            openai_id
            if openai_id.startswith("msg_")
            else "msg_" + openai_id.removeprefix("chatcmpl-")
        )
    return "msg_" + os.urandom(12).hex()


def _usage(
    input_tokens: int, output_tokens: int, read: int, written: int, hour: int = 0
) -> dict[str, Any]:
    """Anthropic counts cache reads and writes apart from input_tokens; OpenAI's prompt (and
    faregate's Usage) includes both. Writes are told apart by lifetime (`cache_creation`,
    `hour` of them for an hour) when there are any."""
    usage: dict[str, Any] = {
        "input_tokens": max(input_tokens - read - written, 0),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
    if written:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": written - hour,
            "ephemeral_1h_input_tokens": hour,
        }
    return usage


def _usage_of(usage: Usage) -> dict[str, Any]:
    """`_usage` of faregate's Usage."""
    return _usage(
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.cache_write_1h_tokens,
    )


def _openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """`_usage` of an OpenAI `usage` object; cache writes as faregate's adapters report them
    (`cache_creation_input_tokens`, by lifetime in `prompt_tokens_details`, as LiteLLM
    does)."""
    details = usage.get("prompt_tokens_details") or {}
    lifetimes = details.get("cache_creation_token_details") or {}
    return _usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(details.get("cached_tokens") or 0),
        int(usage.get("cache_creation_input_tokens") or 0),
        int(lifetimes.get("ephemeral_1h_input_tokens") or 0),
    )


def _stop(finish_reason: Any, matched: Any) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence). A choice that stopped on a stop sequence names it in
    `stop_reason`, as vLLM's OpenAI-compatible server does and faregate's Anthropic adapter
    does; OpenAI and Gemini cannot say which sequence matched, so theirs is `end_turn`."""
    if finish_reason == "stop" and isinstance(matched, str):
        return "stop_sequence", matched
    return STOP_REASONS.get(str(finish_reason), "end_turn"), None


def _arguments(raw: Any) -> Any:
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def response_from_openai(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages answer for a chat.completion (its first choice)."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = _thinking_blocks(message)
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = _stop(choice.get("finish_reason"), choice.get("stop_reason"))
    return {
        "id": _message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _openai_usage(body.get("usage") or {}),
    }


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's thinking first, as Claude gives it: the `thinking_blocks` the Anthropic
    adapter put on the message (signatures and redacted data as Claude sent them), else a
    `reasoning_content` (Gemini's thoughts, DeepSeek's reasoning) as one thinking block with
    no signature, which only Claude could have made."""
    blocks = message.get("thinking_blocks")
    if isinstance(blocks, list) and blocks:
        return [dict(block) for block in blocks if isinstance(block, dict)]
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        return [{"type": "thinking", "thinking": reasoning, "signature": ""}]
    return []


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """Anthropic's error shape; the type follows the status as Anthropic's API uses it."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


# -- streams -------------------------------------------------------------------------


class StreamTranslator:
    """OpenAI chat.completion.chunk dicts in, Anthropic SSE events out, in Anthropic's order:
    message_start, then per block content_block_start (a ping after the first), deltas and
    content_block_stop, then message_delta and message_stop from `finish`.

    `reported`: the usage the upstream reported before its first chunk (Claude's
    message_start), for message_start's usage as Claude gives it. The anthropic SDK takes a
    streamed message's `cache_creation` (writes by lifetime) from message_start alone;
    message_delta restates the counts it updates (input, cache reads and writes, output)."""

    def __init__(self, model: str, reported: Usage | None = None) -> None:
        self.model = model
        self.reported = reported
        self.id = "msg_" + os.urandom(12).hex()
        self.started = False
        self.pinged = False
        self.index = -1  # current content block; -1 before the first
        # "text", "thinking" (not signed yet), "signed", "redacted", or the OpenAI index of
        # the open tool call.
        self.open: Any = None
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> content block index
        # Seen in the chunks, for a caller that has no Usage or finish reason at hand.
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, Any] = {}

    def _start(self) -> list[Event]:
        self.started = True
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(0, 0, 0, 0) if self.reported is None else _usage_of(self.reported),
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events = [] if self.started else self._start()
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if isinstance(choice.get("stop_reason"), str):
                self.stop_sequence = choice["stop_reason"]
            delta = choice.get("delta") or {}
            if delta.get("thinking_blocks") or delta.get("reasoning_content"):
                events.extend(self._thoughts(delta))
            if delta.get("content"):
                events.extend(self._text(delta["content"]))
            for call in delta.get("tool_calls") or ():
                events.extend(self._tool(call))
        return events

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open(self, block: dict[str, Any], kind: Any) -> list[Event]:
        events = self._close()
        self.index += 1
        self.open = kind
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self.index, "content_block": block},
            )
        )
        if not self.pinged:
            self.pinged = True
            events.append(("ping", {"type": "ping"}))
        return events

    def _delta(self, index: int, delta: dict[str, Any]) -> Event:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )

    def _text(self, text: str) -> list[Event]:
        events = [] if self.open == "text" else self._open({"type": "text", "text": ""}, "text")
        events.append(self._delta(self.index, {"type": "text_delta", "text": text}))
        return events

    def _thoughts(self, delta: dict[str, Any]) -> list[Event]:
        """Thinking pieces (`thinking_blocks`, as the Anthropic adapter streams them; else a
        `reasoning_content`) as thinking blocks: a signature ends its block, a redacted
        block comes whole."""
        pieces = delta.get("thinking_blocks")
        if not isinstance(pieces, list) or not pieces:
            pieces = [{"type": "thinking", "thinking": delta["reasoning_content"]}]
        events: list[Event] = []
        for piece in pieces:
            if not isinstance(piece, dict):
                continue
            if piece.get("type") == "redacted_thinking":
                block = {"type": "redacted_thinking", "data": str(piece.get("data") or "")}
                events.extend(self._open(block, "redacted"))
                continue
            if self.open != "thinking" and (piece.get("thinking") or piece.get("signature")):
                block = {"type": "thinking", "thinking": "", "signature": ""}
                events.extend(self._open(block, "thinking"))
            if piece.get("thinking"):
                text = str(piece["thinking"])
                events.append(self._delta(self.index, {"type": "thinking_delta", "thinking": text}))
            if piece.get("signature"):
                signature = {"type": "signature_delta", "signature": str(piece["signature"])}
                events.append(self._delta(self.index, signature))
                self.open = "signed"
        return events

    def _tool(self, call: dict[str, Any]) -> list[Event]:
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        events: list[Event] = []
        if position not in self.tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + os.urandom(12).hex(),
                "name": function.get("name") or "",
                "input": {},
            }
            events = self._open(block, position)
            self.tools[position] = self.index
        if function.get("arguments"):
            events.append(
                self._delta(
                    self.tools[position],
                    {"type": "input_json_delta", "partial_json": function["arguments"]},
                )
            )
        return events

    def _final_usage(self, usage: Usage | None) -> dict[str, Any]:
        return _openai_usage(self.usage) if usage is None else _usage_of(usage)

    def finish(self, usage: Usage | None, finish_reason: str | None = None) -> list[Event]:
        """Close the message. Without a Usage or finish reason, those seen in the chunks
        (the final usage-only chunk, the last finish_reason) are used."""
        events = ([] if self.started else self._start()) + self._close()
        stop_reason, stop_sequence = _stop(finish_reason or self.finish_reason, self.stop_sequence)
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": self._final_usage(usage),
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events
