"""OpenAI adapter mapping on wire examples from OpenAI's API reference."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faregate.providers.base import ProviderError, Relayed, StreamState, delta_chars
from faregate.providers.http import SSEDecoder
from faregate.providers.openai import (
    StreamParser,
    chat_payload,
    chat_result,
    embeddings_result,
    images_result,
    parse_error,
    usage_from_openai,
)
from faregate.providers.shape import FROM_MESSAGES_API
from tests.providers.wire import offline, run_relay, run_sse

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1919,
        "completion_tokens": 310,
        "total_tokens": 2229,
        "prompt_tokens_details": {"cached_tokens": 1792, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 256,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
}

STREAM = """\
data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}

data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}

data: [DONE]

"""

BODY = {
    "model": "public-name",
    "messages": [{"role": "user", "content": "Hello there, how are you?"}],
}


def test_chat_payload_replaces_the_model_and_keeps_unknown_fields() -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": False}, "x_custom": 1}
    assert chat_payload(body, "gpt-4o", stream=False) == {
        "model": "gpt-4o",
        "messages": BODY["messages"],
        "x_custom": 1,
    }
    streamed = chat_payload(body, "gpt-4o", stream=True)
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}
    assert body["model"] == "public-name"  # the caller's body is not modified


def test_a_messages_api_body_reaches_openai_without_anthropic_fields() -> None:
    ephemeral = {"type": "ephemeral"}
    text = {"type": "text", "text": "sys", "cache_control": ephemeral}
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "cache_control": ephemeral,
    }
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": [text]},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c", "content": "ok", "cache_control": ephemeral},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": ephemeral}],
        "cache_control": ephemeral,
        FROM_MESSAGES_API: True,
    }
    payload = chat_payload(body, "gpt-4o", stream=False)
    assert "cache_control" not in str(payload) and FROM_MESSAGES_API not in payload
    assert payload["messages"][0] == {"role": "system", "content": "sys"}
    assert body["messages"][0]["content"][0] is text  # the client's body is left as it was
    # A /v1/chat/completions body passes as it came, unknown fields and all.
    plain = {k: v for k, v in body.items() if k != FROM_MESSAGES_API}
    assert chat_payload(plain, "gpt-4o", stream=False) == {**plain, "model": "gpt-4o"}


def test_a_messages_api_tool_error_is_noted_and_an_image_in_it_refused() -> None:
    texts = [{"type": "text", "text": "no such city"}]
    tool = {"role": "tool", "tool_call_id": "c", "content": texts, "is_error": True}
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}, tool]}
    payload = chat_payload({**body, FROM_MESSAGES_API: True}, "gpt-4o", stream=False)
    assert payload["messages"][1] == {
        "role": "tool",
        "tool_call_id": "c",
        "content": "Error: no such city",
    }
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
    body["messages"][1] = {**tool, "content": [*texts, image]}
    with pytest.raises(ProviderError) as refused:
        chat_payload({**body, FROM_MESSAGES_API: True}, "gpt-4o", stream=False)
    assert (refused.value.status, refused.value.param) == (400, "messages[1].content[1]")


def test_usage_keeps_openai_inclusive_counts() -> None:
    usage = usage_from_openai(COMPLETION["usage"])
    assert usage is not None
    assert (usage.input_tokens, usage.cached_input_tokens) == (1919, 1792)
    assert (usage.output_tokens, usage.reasoning_tokens) == (310, 256)
    assert not usage.estimated


def test_deepseek_cache_hits_count_as_cached_input() -> None:
    raw = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    usage = usage_from_openai(raw)
    assert usage is not None and usage.cached_input_tokens == 64


def test_chat_result_passes_the_body_through() -> None:
    result = chat_result(copy.deepcopy(COMPLETION), BODY)
    assert result.body == COMPLETION
    assert result.usage.input_tokens == 1919


def test_chat_without_usage_is_estimated_and_reported() -> None:
    data = copy.deepcopy(COMPLETION)
    del data["usage"]
    result = chat_result(data, BODY)
    assert result.usage.estimated
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens == 9  # 34 characters, four per token, rounded up
    assert result.body["usage"]["completion_tokens"] == 9


def test_a_chat_body_without_choices_is_a_bad_response() -> None:
    with pytest.raises(ProviderError) as info:
        chat_result({"id": "x"}, BODY)
    assert info.value.code == "upstream_bad_response"


def test_stream_passes_chunks_through_and_records_usage() -> None:
    state = StreamState()
    chunks = run_sse(StreamParser(BODY, state, offline("openai", parse_error)), STREAM)
    assert [c["choices"] for c in chunks][-1] == []
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Hello"
    assert state.usage is not None and (state.usage.input_tokens, state.usage.output_tokens) == (
        9,
        2,
    )
    assert state.finish_reason == "stop"


def test_a_stream_without_usage_ends_with_an_estimated_usage_chunk() -> None:
    text = "\n".join(line for line in STREAM.splitlines() if '"choices":[]' not in line)
    state = StreamState()
    chunks = run_sse(StreamParser(BODY, state, offline("openai", parse_error)), text)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert state.usage is not None and state.usage.estimated


def test_a_stream_cut_before_its_end_raises() -> None:
    cut = STREAM.split("data: {", 3)
    text = "data: {".join(cut[:3])
    with pytest.raises(ProviderError) as info:
        run_sse(StreamParser(BODY, StreamState(), offline("openai", parse_error)), text)
    assert info.value.code == "upstream_disconnected"


def test_an_error_inside_a_stream_raises() -> None:
    text = 'data: {"error": {"message": "overloaded", "type": "server_error", "code": null}}\n\n'
    with pytest.raises(ProviderError) as info:
        run_sse(StreamParser(BODY, StreamState(), offline("openai", parse_error)), text)
    assert info.value.retryable


def _parser(state: StreamState | None = None) -> StreamParser:
    return StreamParser(BODY, state or StreamState(), offline("openai", parse_error))


def _chunks(items: list[Any]) -> list[dict[str, Any]]:
    return [c for item in items for c in (item.chunks() if type(item) is Relayed else [item])]


def test_a_relayed_stream_passes_its_events_as_received_and_reads_those_that_report() -> None:
    parsed_state, relayed_state = StreamState(), StreamState(relay=True)
    parsed = run_sse(_parser(parsed_state), STREAM)
    items = run_relay(_parser(relayed_state), STREAM)
    # Every chunk byte for byte as the upstream sent it (the role and content events in
    # runs, the finish and usage events read first); [DONE] is the gateway's own to send.
    sent = STREAM.encode().split(b"\n\n")
    assert [type(item) for item in items] == [Relayed]  # one read, one run
    assert items[0].data == b"".join(e + b"\n\n" for e in sent[:4])
    assert sent[4] == b"data: [DONE]"
    assert _chunks(items) == parsed
    for state in (parsed_state, relayed_state):
        assert state.usage is not None and state.usage.output_tokens == 2
        assert state.usage.input_tokens == 9 and state.finish_reason == "stop"
    assert sum(item.text_chars() for item in items) == len("Hello")
    assert len("Hello") == sum(delta_chars(c) for c in parsed)


def test_a_relayed_stream_without_usage_is_estimated_from_the_text_it_relayed() -> None:
    text = "\n".join(line for line in STREAM.splitlines() if '"choices":[]' not in line)
    parsed_state, relayed_state = StreamState(), StreamState(relay=True)
    parsed = run_sse(_parser(parsed_state), text)
    items = run_relay(_parser(relayed_state), text)
    assert type(items[0]) is Relayed and items[-1] == parsed[-1]  # the same estimate chunk
    assert relayed_state.usage == parsed_state.usage and relayed_state.usage is not None
    assert relayed_state.usage.estimated


def test_a_relayed_stream_cut_before_its_end_raises() -> None:
    text = "data: {".join(STREAM.split("data: {", 3)[:3])
    with pytest.raises(ProviderError) as info:
        run_relay(_parser(), text)
    assert info.value.code == "upstream_disconnected"


def _content_event(text: str, **fields: Any) -> bytes:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}
        ],
        "usage": None,
    }
    chunk.update(fields)
    return b"data: " + orjson.dumps(chunk)


def _sse(*events: bytes) -> bytes:
    return b"".join(event + b"\n\n" for event in events)


def _relayed(parser: StreamParser, run: bytes) -> list[bytes | None]:
    """What `relay` makes of each position of `run`: a run's data, or None for an event
    left to `feed` (then skipped)."""
    out: list[bytes | None] = []
    at = 0
    while at < len(run):
        end = parser.relay(run, at)
        out.append(run[at:end] if end is not None else None)
        at = end if end is not None else run.find(b"\n\n", at) + 2
    return out


@pytest.mark.parametrize(
    "event",
    [
        _content_event("x", usage={"prompt_tokens": 1, "completion_tokens": 1}),
        _content_event("x").replace(b'"finish_reason":null', b'"finish_reason":"stop"'),
        _content_event("x", error={"message": "overloaded"}),
        b'data: {"error":{"message":"overloaded","type":"server_error"}}',
        _content_event("x", choices=[{"index": 0, "delta": {}, "usage": None}]).replace(
            b'"usage":null}', b'"usage":{"completion_tokens":3}}'
        ),
        b"data: [DONE]",
    ],
    ids=["usage", "finish", "error-beside-choices", "error", "nested-usage", "done"],
)
def test_an_event_that_carries_anything_the_gateway_reads_is_parsed(event: bytes) -> None:
    """Whether it comes first (proved alone) or inside a read of a compact host's events
    (found by scanning the read), the run stops before it and it is left to `feed`."""
    first, after = _content_event("first"), _content_event("after")
    assert _relayed(_parser(), _sse(event, first)) == [None, _sse(first)]
    assert _relayed(_parser(), _sse(first, after, event, after)) == [
        _sse(first, after),  # the first event shows the host writes compactly: scanned too
        None,
        _sse(after),
    ]


@pytest.mark.parametrize(
    "text",
    ["plain", 'a "quoted" word', "ends in a backslash \\", "line\nbreak", "é ✓", ""],
)
def test_content_events_relay_whatever_their_text(text: str) -> None:
    first, event, after = _content_event("first"), _content_event(text), _content_event("after")
    assert _relayed(_parser(), _sse(first, event, after)) == [_sse(first, event, after)]


def test_events_that_never_show_compact_json_are_proved_one_by_one() -> None:
    """A host that leaves out a null `finish_reason`: nothing shows how it writes its keys,
    so each event is relayed alone once its keys are counted."""
    a, b = (_content_event(t).replace(b',"finish_reason":null', b"") for t in ("a", "b"))
    assert b"finish_reason" not in a + b
    finish = _content_event("c").replace(b'"finish_reason":null', b'"finish_reason":"stop"')
    assert _relayed(_parser(), _sse(a, b, finish)) == [_sse(a), _sse(b), None]


def test_a_host_that_does_not_write_compact_json_has_its_events_parsed() -> None:
    """Keys the scan would not find as written (`"usage": {`): the count that proves an
    event finds `"usage": null` too, so each event is parsed and the usage is read."""

    def spaced(event: bytes) -> bytes:
        return event.replace(b'":null', b'": null').replace(b'":{', b'": {')

    first, after = spaced(_content_event("first")), spaced(_content_event("after"))
    usage = spaced(_content_event("x", usage={"prompt_tokens": 3, "completion_tokens": 9}))
    assert b'"usage": {' in usage
    run = _sse(first, after, usage, after)
    assert _relayed(_parser(), run) == [None] * 4
    state = StreamState(relay=True)
    run_relay(_parser(state), (run + b"data: [DONE]\n\n").decode())
    assert state.usage is not None and state.usage.output_tokens == 9


def test_content_after_one_choice_finished_is_relayed_again() -> None:
    """With n = 2, one choice may finish while the other still streams: the finish event is
    read and the content after it is relayed, all from one read and in one run (the events
    read first go on as received, joined to the runs around them)."""
    finish = _content_event("x").replace(b'"finish_reason":null', b'"finish_reason":"stop"')
    events = [_content_event("a"), _content_event("b"), finish, _content_event("c")]
    state = StreamState(relay=True)
    parser = _parser(state)
    items = run_relay(parser, _sse(*events, b"data: [DONE]").decode())
    *relayed, estimate = items  # no usage came: the gateway adds its estimate's chunk
    assert [item.data for item in relayed] == [_sse(*events)]
    assert parser.finish_reason == "stop" and parser.done and estimate["choices"] == []


def test_of_the_usages_and_finishes_in_one_read_the_last_is_read() -> None:
    """A host that streams a running usage on every chunk (and two choices finishing in
    turn): the events before the last usage go through unread, and the stream ends with
    what reading every one of them in order gives."""

    def counted(text: str, tokens: int, finish: str | None = None) -> bytes:
        event = _content_event(text, usage={"prompt_tokens": 5, "completion_tokens": tokens})
        if finish is None:
            return event
        return event.replace(b'"finish_reason":null', f'"finish_reason":"{finish}"'.encode())

    first = _content_event("first")  # proves the host compact
    events = [first, counted("a", 1), counted("b", 2, "length"), counted("c", 3, "stop")]
    text = _sse(*events, b"data: [DONE]").decode()
    parsed_state, relayed_state = StreamState(), StreamState(relay=True)
    parsed = run_sse(_parser(parsed_state), text)
    parser = _parser()
    assert _relayed(parser, _sse(first)) == [_sse(first)]
    assert _relayed(parser, _sse(*events[1:])) == [_sse(*events[1:3]), None]
    items = run_relay(_parser(relayed_state), text)
    assert [item.data for item in items] == [_sse(*events)]
    assert _chunks(items) == parsed
    for state in (parsed_state, relayed_state):
        assert state.usage is not None and state.usage.output_tokens == 3
        assert state.finish_reason == "stop"


def test_a_read_stops_at_its_first_error_before_any_later_finish() -> None:
    finish = _content_event("x").replace(b'"finish_reason":null', b'"finish_reason":"stop"')
    error = b'data: {"error":{"message":"overloaded","type":"server_error"}}'
    first, after = _content_event("first"), _content_event("after")
    parser = _parser()
    assert _relayed(parser, _sse(first)) == [_sse(first)]  # proves the host compact
    assert _relayed(parser, _sse(after, error, after, finish)) == [
        _sse(after),
        None,
        _sse(after),
        None,
    ]
    with pytest.raises(ProviderError):
        run_relay(_parser(), _sse(first, after, error, after, finish).decode())


def test_the_decoder_gives_a_read_of_one_line_data_events_in_one_piece() -> None:
    decoder = SSEDecoder()
    events = [_content_event("a"), _content_event("b")]
    assert decoder.feed_raw(_sse(*events) + b'data: {"part') == [_sse(*events)]
    # The rest of the read waits for its blank line; a comment splits the read by event.
    assert decoder.feed_raw(b'ial"}\n\n: ping\n\n' + _sse(events[0])) == [
        b'data: {"partial"}\n\n',
        _sse(events[0]),
    ]


@pytest.mark.parametrize(
    "read",
    [
        b'data: {"a":1}\n\ndata: {"b":2}\n\n',
        b'data: {"a":1}\n\ndata: \n\ndata: {"b":2}\n\n',  # an empty event among them
        b'data: {"a":"data: x"}\n\n',  # the separator's text inside a string
        b'data: {"a":1}\n\n\ndata: {"b":2}\n\n',  # a third newline
        b'data: {"a":1}\ndata: {"b":2}\n\n',  # one event of two lines
        b'data: {"a":1}\n\nevent: x\ndata: {"b":2}\n\n',
        b'data: {"a":1}\n\n: ping\n\n',
        b'data:{"a":1}\n\n',  # no space after the colon
        b'data: {"a":1}\n\ndata:{"b":2}\n\n',
        b'event: x\ndata: {"a":1}\n\n',
    ],
)
def test_the_decoder_gives_a_read_in_one_piece_only_when_each_event_is_one_data_line(
    read: bytes,
) -> None:
    """The rule, by counting: every newline but the last two is one of the pair before a
    `data: ` that starts the next event."""
    one_piece = (
        read.startswith(b"data: ") and read.count(b"\n") == 2 * read.count(b"\n\ndata: ") + 2
    )
    assert (SSEDecoder().feed_raw(read) == [read]) is one_piece
    # Either way the events are the same as the decoder's, parsed.
    parsed = SSEDecoder().feed(read)
    pieces = SSEDecoder().feed_raw(read)
    events = [
        e
        for piece in pieces
        for e in (SSEDecoder().feed(piece) if type(piece) is bytes else [piece])
    ]
    assert [(e.event, e.data) for e in events] == [(e.event, e.data) for e in parsed]


@given(st.lists(st.sampled_from([b"data: ", b"data:", b"\n", b"\n\n", b"x", b": ", b"event: "])))
def test_the_one_piece_rule_is_the_counting_rule_for_any_read(parts: list[bytes]) -> None:
    read = b"".join(parts) + b"\n\n"
    one_piece = (
        read.startswith(b"data: ") and read.count(b"\n") == 2 * read.count(b"\n\ndata: ") + 2
    )
    assert (SSEDecoder().feed_raw(read)[:1] == [read]) is one_piece


def test_the_text_of_relayed_runs_counts_when_a_stream_is_cut() -> None:
    state = StreamState(relay=True)
    state.relayed_chars = 3  # from chunks relayed as dicts
    state.relayed_runs.append(Relayed(_sse(_content_event("Hello"), _content_event(" world"))))
    assert state.relayed_text_chars() == 3 + len("Hello world")


def test_error_bodies_keep_structured_code_and_param() -> None:
    body = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    detail = parse_error(body)
    assert (detail.code, detail.param) == ("context_length_exceeded", "messages")
    assert parse_error({"error": "model 'x' not found"}).message == "model 'x' not found"
    assert parse_error({"object": "error", "message": "bad", "code": 400}).message == "bad"


def test_embeddings_usage_comes_from_prompt_tokens() -> None:
    data = {
        "object": "list",
        "data": [{"object": "embedding", "embedding": [0.1], "index": 0}],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    assert embeddings_result(data, {"input": "The food was delicious"}).usage.input_tokens == 8
    del data["usage"]
    result = embeddings_result(data, {"input": ["abcd", "abcdefgh"]})
    assert (result.usage.input_tokens, result.usage.estimated) == (3, True)


def test_images_usage_counts_images_size_quality_and_steps() -> None:
    data = {"created": 1713833628, "data": [{"b64_json": "..."}, {"b64_json": "..."}]}
    usage = images_result(
        data, {"prompt": "otter", "size": "1792x1024", "quality": "hd", "steps": 30}
    ).usage
    assert (usage.images, usage.image_width, usage.image_height) == (2, 1792, 1024)
    assert (usage.image_quality, usage.image_steps) == ("hd", 30)
    default = images_result({"data": [{"url": "u"}]}, {"prompt": "otter"}).usage
    assert (default.image_size, default.image_quality, default.image_steps) == (
        "1024x1024",
        "standard",
        None,
    )


def test_token_priced_image_models_report_tokens() -> None:
    data = {
        "data": [{"b64_json": "..."}],
        "usage": {
            "total_tokens": 100,
            "input_tokens": 50,
            "output_tokens": 50,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
        },
    }
    usage = images_result(data, {"prompt": "otter", "size": "auto"}).usage
    assert (usage.input_tokens, usage.output_tokens, usage.image_size) == (50, 50, "1024x1024")


def test_payloads_serialize_with_orjson() -> None:
    assert orjson.loads(orjson.dumps(chat_payload(BODY, "m", stream=True)))["model"] == "m"


@pytest.mark.parametrize(
    ("delta", "chars"),
    [
        ({"content": "Lorem"}, 5),
        ({"role": "assistant", "content": "", "refusal": None}, 0),
        ({"role": "assistant"}, 0),
        ({"refusal": "I can't"}, 7),
        ({"content": "ab", "refusal": "cd"}, 4),
        ({"content": None, "tool_calls": [{"function": {"name": "f", "arguments": '{"a"'}}]}, 5),
        ({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}, "bad"]}, 2),
        ({"content": 7}, 0),
        ({}, 0),
    ],
)
def test_delta_chars_counts_every_kind_of_text(delta: dict[str, Any], chars: int) -> None:
    chunk = {"choices": [{"index": 0, "delta": delta}, {"index": 1, "delta": {"content": "xyz"}}]}
    assert delta_chars(chunk) == chars + 3
    assert delta_chars({"choices": [], "usage": {"prompt_tokens": 1}}) == 0
    assert delta_chars({"choices": ["bad", {"delta": "bad"}]}) == 0


def test_gemini_signatures_are_cut_from_tool_call_ids_and_the_body_left_as_it_was() -> None:
    signed = "call_0123456789abcdef01234567.c2lnbmF0dXJl+/="
    call = {"id": signed, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": signed, "content": "ok"},
        ],
    }
    payload = chat_payload(body, "gpt-4o", stream=False)
    plain = "call_0123456789abcdef01234567"
    assert payload["messages"][1]["tool_calls"][0]["id"] == plain
    assert payload["messages"][2]["tool_call_id"] == plain
    assert payload["messages"][0] is body["messages"][0]
    assert body["messages"][1]["tool_calls"][0]["id"] == signed  # the client's body as it was
    unsigned = {**body, "messages": [body["messages"][0]]}
    assert chat_payload(unsigned, "gpt-4o", stream=False)["messages"] is unsigned["messages"]
