"""Messages answers made from chat completions, whole and streamed: content blocks, usage
(cache reads and writes apart from input), stop reasons and the order of stream events."""

from __future__ import annotations

import copy

import anthropic
import pytest

from faregate.api.anthropic_answer import StreamTranslator, response_from_openai
from faregate.usage import Usage
from tests.api.test_anthropic_wire import TOOL_CHUNKS, TOOL_COMPLETION, USAGE, _chunk

# -- responses -----------------------------------------------------------------------


def test_a_completion_becomes_a_valid_message() -> None:
    message = anthropic.types.Message.model_validate(
        response_from_openai(copy.deepcopy(TOOL_COMPLETION), "claude-public")
    )
    assert message.model == "claude-public" and message.id.startswith("msg_")
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text" and message.content[0].text == "Let me check."
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.input == {"location": "Boston, MA"}
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (58, 1024)
    assert (message.usage.output_tokens, message.usage.cache_creation_input_tokens) == (17, 0)


def test_cache_writes_and_reads_are_reported_apart_from_input() -> None:
    body = copy.deepcopy(TOOL_COMPLETION)
    body["usage"]["prompt_tokens"] = 3082
    body["usage"]["cache_creation_input_tokens"] = 2000
    body["usage"]["prompt_tokens_details"]["cache_creation_token_details"] = {
        "ephemeral_5m_input_tokens": 500,
        "ephemeral_1h_input_tokens": 1500,
    }
    usage = response_from_openai(body, "m")["usage"]
    assert usage == {
        "input_tokens": 58,
        "output_tokens": 17,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 1024,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500},
    }
    written = Usage(input_tokens=3082, output_tokens=17, cached_input_tokens=1024)
    written.cache_write_tokens, written.cache_write_1h_tokens = 2000, 1500
    translator = StreamTranslator("m")
    assert translator.finish(written)[-2][1]["usage"] == usage


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reasons_become_stop_reasons(finish: str, stop: str) -> None:
    body = {
        "id": "c",
        "choices": [
            {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "x"}}
        ],
    }
    assert response_from_openai(body, "m")["stop_reason"] == stop


def test_a_stop_sequence_named_by_the_choice_becomes_stop_sequence() -> None:
    """vLLM (and faregate's Anthropic adapter) name the matched sequence in the choice's
    `stop_reason`; OpenAI's answers have none, so theirs stays end_turn."""
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant"}}
    named = response_from_openai({"id": "c", "choices": [{**choice, "stop_reason": "###"}]}, "m")
    assert (named["stop_reason"], named["stop_sequence"]) == ("stop_sequence", "###")
    token = response_from_openai({"id": "c", "choices": [{**choice, "stop_reason": 128001}]}, "m")
    assert (token["stop_reason"], token["stop_sequence"]) == ("end_turn", None)
    translator = StreamTranslator("m")
    finish = _chunk({}, "stop")
    finish["choices"][0]["stop_reason"] = "###"
    translator.feed(_chunk({"content": "Hi"}))
    translator.feed(finish)
    delta = translator.finish(USAGE)[-2][1]["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_stream_events_follow_anthropics_order() -> None:
    translator = StreamTranslator("claude-public")
    events = [e for c in TOOL_CHUNKS for e in translator.feed(c)] + translator.finish(
        USAGE, "tool_calls"
    )
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert events[-2][1]["usage"] == {
        "input_tokens": 58,
        "output_tokens": 17,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1024,
    }


def test_finish_falls_back_to_what_the_chunks_said() -> None:
    translator = StreamTranslator("m")
    for c in TOOL_CHUNKS:
        translator.feed(c)
    delta = translator.finish(None)[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 17


def test_an_empty_stream_still_makes_a_whole_message() -> None:
    names = [name for name, _ in StreamTranslator("m").finish(Usage(), "stop")]
    assert names == ["message_start", "message_delta", "message_stop"]


def test_message_start_carries_the_usage_the_upstream_reported_before_its_first_chunk() -> None:
    """The anthropic SDK takes a streamed message's cache_creation from message_start only."""
    early = Usage(
        input_tokens=2000, output_tokens=1, cache_write_tokens=1024, cache_write_1h_tokens=1024
    )
    (_, start), *_ = StreamTranslator("claude", early).feed(_chunk({"role": "assistant"}))
    assert start["message"]["usage"] == {
        "input_tokens": 976,
        "output_tokens": 1,
        "cache_creation_input_tokens": 1024,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1024},
    }
    (_, unknown), *_ = StreamTranslator("claude").feed(_chunk({"role": "assistant"}))
    assert unknown["message"]["usage"]["input_tokens"] == 0
