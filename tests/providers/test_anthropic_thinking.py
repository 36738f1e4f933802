"""The Anthropic adapter's extended thinking and cache lifetimes: thinking sent as asked (or
as OpenAI's reasoning_effort asks), thinking blocks answered (whole and streamed) in the
canonical shape and passed back, 1-hour cache writes told apart from 5-minute ones, and
logprobs refused."""

from __future__ import annotations

from typing import Any

import pytest

from faregate.providers.anthropic import StreamParser, chat_result, parse_error
from faregate.providers.base import ProviderError, StreamState, delta_chars
from tests.providers.test_anthropic import TOOL_USE_RESPONSE, _request
from tests.providers.wire import offline, run_sse


def test_one_hour_cache_writes_are_told_apart_from_five_minute_ones() -> None:
    body = {
        **TOOL_USE_RESPONSE,
        "usage": {
            **TOOL_USE_RESPONSE["usage"],
            "cache_creation": {"ephemeral_5m_input_tokens": 51, "ephemeral_1h_input_tokens": 2000},
        },
    }
    result = chat_result(body)
    assert (result.usage.cache_write_tokens, result.usage.cache_write_1h_tokens) == (2051, 2000)
    details = result.body["usage"]["prompt_tokens_details"]["cache_creation_token_details"]
    assert details == {"ephemeral_5m_input_tokens": 51, "ephemeral_1h_input_tokens": 2000}


# -- extended thinking ---------------------------------------------------------------------

THINKING_RESPONSE: dict[str, Any] = {
    **TOOL_USE_RESPONSE,
    "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAhIM"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "Sunny."},
    ],
    "stop_reason": "end_turn",
}

# A streamed answer with extended thinking, in the shape of the extended-thinking guide's.
THINKING_STREAM = """\
event: message_start
data: {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me solve"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " this."}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: content_block_start
data: {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "27 * 453 = 12,231"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 1}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 40, "output_tokens_details": {"thinking_tokens": 30}}}

event: message_stop
data: {"type": "message_stop"}

"""


def test_thinking_reaches_claude_as_sent() -> None:
    thinking = {"type": "adaptive", "display": "omitted"}
    body = {"messages": [{"role": "user", "content": "x"}], "thinking": thinking}
    assert _request(body)["thinking"] == thinking
    assert "thinking" not in _request({"messages": [{"role": "user", "content": "x"}]})


def test_thinking_and_redacted_blocks_come_back_as_thinking_blocks_and_reasoning() -> None:
    message = chat_result(THINKING_RESPONSE).body["choices"][0]["message"]
    assert message["content"] == "Sunny."
    assert message["reasoning_content"] == "Let me think."
    assert message["thinking_blocks"] == THINKING_RESPONSE["content"][:2]


def test_an_answer_without_thinking_has_no_thinking_fields() -> None:
    message = chat_result(TOOL_USE_RESPONSE).body["choices"][0]["message"]
    assert "thinking_blocks" not in message and "reasoning_content" not in message


def test_thinking_blocks_in_history_go_first_and_unsigned_ones_are_left_out() -> None:
    blocks = [
        {"type": "thinking", "thinking": "a", "signature": "s1"},
        {"type": "thinking", "thinking": "from gemini", "signature": ""},
        {"type": "redacted_thinking", "data": "d1"},
    ]
    call = {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "ok", "tool_calls": [call], "thinking_blocks": blocks},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
        ]
    }
    content = _request(body)["messages"][1]["content"]
    assert content[:2] == [blocks[0], blocks[2]]
    assert [b["type"] for b in content[2:]] == ["text", "tool_use"]


def test_a_thinking_stream_becomes_reasoning_and_signed_thinking_block_pieces() -> None:
    state = StreamState()
    parser = StreamParser("claude", state, offline("anthropic", parse_error))
    chunks = run_sse(parser, THINKING_STREAM)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Let me solve this."
    pieces = [p for d in deltas for p in d.get("thinking_blocks", ())]
    assert pieces[-1] == {
        "type": "thinking",
        "thinking": "",
        "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds",
    }
    assert "".join(d.get("content") or "" for d in deltas) == "27 * 453 = 12,231"
    assert state.usage is not None and state.usage.reasoning_tokens == 30


def test_relayed_thinking_counts_as_relayed_text_for_a_cut_stream() -> None:
    chunk = {
        "choices": [{"index": 0, "delta": {"reasoning_content": "Let me", "thinking_blocks": []}}]
    }
    assert delta_chars(chunk) == len("Let me")


# -- reasoning_effort and logprobs from OpenAI clients ---------------------------------------

HELLO: Any = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    ("effort", "max_tokens", "budget"),
    [
        ("minimal", 4096, 1024),
        ("low", 4096, 1024),
        ("medium", 4096, 2048),
        ("high", 8000, 4096),
        ("xhigh", 20000, 8192),
        ("max", 20000, 16384),
        ("high", 3000, 2999),  # kept below max_tokens, as Claude requires
    ],
)
def test_reasoning_effort_becomes_a_thinking_budget(
    effort: str, max_tokens: int, budget: int
) -> None:
    request = _request({"messages": HELLO, "reasoning_effort": effort, "max_tokens": max_tokens})
    assert request["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert "reasoning_effort" not in request


def test_reasoning_effort_none_sends_no_thinking_and_thinking_wins_over_effort() -> None:
    assert "thinking" not in _request({"messages": HELLO, "reasoning_effort": "none"})
    adaptive = {"type": "adaptive"}
    body = {"messages": HELLO, "reasoning_effort": "high", "thinking": adaptive}
    assert _request(body)["thinking"] == adaptive


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning_effort": "low", "max_tokens": 1024}, "max_tokens"),
    ],
)
def test_a_reasoning_effort_claude_cannot_take_is_a_400_naming_it(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(ProviderError) as info:
        _request({"messages": HELLO, **body})
    assert (info.value.status, info.value.param, info.value.retryable) == (400, param, False)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_logprobs_are_refused_with_openais_unsupported_parameter(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(ProviderError) as info:
        _request({"messages": HELLO, **body})
    error = info.value
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", param)
    assert error.type == "invalid_request_error" and not error.retryable
    assert "thinking" not in _request({"messages": HELLO, "logprobs": False})
