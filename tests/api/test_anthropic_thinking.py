"""Extended thinking across the Messages API translation: `thinking` and thinking blocks in
history into the canonical body, and thinking (Claude's signed blocks, other providers'
reasoning) back into Messages answers, whole and streamed."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from faregate.api.anthropic_answer import StreamTranslator, response_from_openai
from faregate.api.anthropic_wire import count_request_to_openai, request_to_openai
from faregate.errors import InvalidRequest
from faregate.usage import Usage

SIGNED = {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}


def _ask(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "x"}],
        **extra,
    }


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}


@pytest.mark.parametrize(
    "thinking",
    [
        {"type": "enabled", "budget_tokens": 1024},
        {"type": "enabled", "budget_tokens": 4000, "display": "omitted"},
        {"type": "adaptive"},
        {"type": "disabled"},
    ],
)
def test_thinking_is_carried_as_sent(thinking: dict[str, Any]) -> None:
    assert request_to_openai(_ask(thinking=thinking))["thinking"] == thinking
    assert count_request_to_openai(_ask(thinking=thinking))["thinking"] == thinking


@pytest.mark.parametrize(
    ("thinking", "param"),
    [
        ({"type": "enabled", "budget_tokens": 1023}, "thinking.budget_tokens"),
        ({"type": "enabled"}, "thinking.budget_tokens"),
        ({"type": "enabled", "budget_tokens": True}, "thinking.budget_tokens"),
        ("enabled", "thinking.type"),
        ({"budget_tokens": 2000}, "thinking.type"),
    ],
)
def test_a_malformed_thinking_is_a_400_naming_the_field(thinking: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        request_to_openai(_ask(thinking=thinking))
    assert info.value.param == param


def test_thinking_blocks_in_an_assistant_turn_become_its_thinking_blocks() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [SIGNED, REDACTED, {"type": "text", "text": "y"}]},
        {"role": "user", "content": "z"},
    ]
    assistant = request_to_openai(_ask(messages=messages))["messages"][1]
    assert assistant == {"role": "assistant", "content": "y", "thinking_blocks": [SIGNED, REDACTED]}


def test_thinking_blocks_answer_first_with_their_signatures() -> None:
    message = {
        "role": "assistant",
        "content": "Sunny.",
        "reasoning_content": "Let me think.",
        "thinking_blocks": [SIGNED, REDACTED],
    }
    body = {"id": "c", "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}
    answer = anthropic.types.Message.model_validate(response_from_openai(body, "m"))
    assert [b.model_dump() for b in answer.content[:2]] == [SIGNED, REDACTED]
    assert answer.content[2].type == "text"


def test_reasoning_content_alone_answers_as_an_unsigned_thinking_block() -> None:
    message = {"role": "assistant", "content": "4", "reasoning_content": "2 and 2"}
    body = {"id": "c", "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}
    content = response_from_openai(body, "m")["content"]
    assert content[0] == {"type": "thinking", "thinking": "2 and 2", "signature": ""}


def _stream(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    translator = StreamTranslator("m")
    events = [e for c in chunks for e in translator.feed(c)]
    return events + translator.finish(Usage(input_tokens=5, output_tokens=9), "stop")


def test_streamed_thinking_pieces_become_thinking_blocks_each_closed_by_its_signature() -> None:
    def piece(**fields: Any) -> dict[str, Any]:
        return _chunk({"thinking_blocks": [{"type": "thinking", **fields}]})

    events = _stream(
        [
            _chunk({"role": "assistant", "content": ""}),
            piece(thinking="Let me"),
            piece(thinking=" think."),
            piece(thinking="", signature="sig1"),
            piece(thinking="Again."),
            piece(thinking="", signature="sig2"),
            _chunk({"thinking_blocks": [REDACTED]}),
            _chunk({"content": "Sunny."}),
        ]
    )
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "thinking", "redacted_thinking", "text"]
    deltas = [(d["index"], d["delta"]) for n, d in events if n == "content_block_delta"]
    assert deltas[:4] == [
        (0, {"type": "thinking_delta", "thinking": "Let me"}),
        (0, {"type": "thinking_delta", "thinking": " think."}),
        (0, {"type": "signature_delta", "signature": "sig1"}),
        (1, {"type": "thinking_delta", "thinking": "Again."}),
    ]
    redacted = [d for n, d in events if n == "content_block_start"][2]["content_block"]
    assert redacted == REDACTED
    names = [n for n, _ in events]
    assert names.count("content_block_start") == names.count("content_block_stop") == 4


def test_streamed_reasoning_content_becomes_one_thinking_block_before_the_text() -> None:
    events = _stream(
        [
            _chunk({"role": "assistant", "reasoning_content": "2 and "}),
            _chunk({"reasoning_content": "2"}),
            _chunk({"content": "4"}),
        ]
    )
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
    ]
    thinking = [d["delta"].get("thinking") for n, d in events if n == "content_block_delta"]
    assert thinking[:2] == ["2 and ", "2"]
