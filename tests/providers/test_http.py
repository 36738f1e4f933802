"""The shared HTTP plumbing: SSE decoding, Retry-After, the status table, exception mapping."""

from __future__ import annotations

import asyncio
import itertools
from email.utils import formatdate

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faregate.providers.base import Endpoint, ProviderError
from faregate.providers.http import (
    ErrorDetail,
    SSEDecoder,
    SSEEvent,
    error_for_status,
    map_exceptions,
    parse_retry_after,
)
from faregate.providers.transport import HttpTransport

ENDPOINT = Endpoint(name="up", wire="openai", base_url="http://upstream", api_key="sk-secret-key")


def test_sse_decoder_joins_events_split_across_reads_and_skips_comments() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b': keep-alive\n\nevent: message_start\ndata: {"a"')
    assert events == []
    events = decoder.feed(b":1}\r\n\r\ndata: [DONE]\n\n")
    assert events == [SSEEvent("message_start", '{"a":1}'), SSEEvent(None, "[DONE]")]


def test_sse_decoder_reads_data_lines_with_and_without_their_space() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b'data: {"a":1}\n\ndata:{"b":2}\n\ndata:\n\ndata:  two\n\n')
    assert events == [
        SSEEvent(None, '{"a":1}'),
        SSEEvent(None, '{"b":2}'),
        SSEEvent(None, ""),
        SSEEvent(None, " two"),
    ]


def test_sse_decoder_flushes_a_last_event_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\ndata: two") == []
    assert decoder.flush() == [SSEEvent(None, "one\ntwo")]


_TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)))


@given(
    events=st.lists(
        st.tuples(
            st.none() | st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
            st.lists(_TEXT, min_size=1, max_size=3),
            st.booleans(),  # a comment line before the event
        ),
        max_size=8,
    ),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
)
def test_sse_decoder_yields_the_same_events_however_the_bytes_are_cut(
    events: list[tuple[str | None, list[str], bool]], crlf: bool, cuts: list[int]
) -> None:
    eol = "\r\n" if crlf else "\n"
    text = ""
    for name, lines, comment in events:
        text += f": ping{eol}" if comment else ""
        text += f"event: {name}{eol}" if name else ""
        text += "".join(f"data: {line}{eol}" for line in lines) + eol
    wire = text.encode()
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    decoder = SSEDecoder()
    seen = []
    for start, end in itertools.pairwise(bounds):
        seen += decoder.feed(wire[start:end])
    seen += decoder.flush()
    assert seen == [SSEEvent(name, "\n".join(lines)) for name, lines, _ in events]


def test_retry_after_reads_seconds_milliseconds_and_http_dates() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "2"}) == 1.5
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("upstream", "status", "code", "retryable"),
    [
        (400, 400, "invalid_request", False),
        (422, 400, "invalid_request", False),
        (401, 502, "upstream_auth_error", False),
        (402, 502, "upstream_error", True),
        (403, 502, "upstream_auth_error", False),
        (404, 502, "upstream_not_found", False),
        (408, 504, "upstream_timeout", True),
        (409, 502, "upstream_error", True),
        (413, 413, "request_too_large", False),
        (429, 429, "rate_limit_exceeded", True),
        (500, 502, "upstream_error", True),
        (503, 502, "upstream_error", True),
        (529, 503, "upstream_overloaded", True),
    ],
)
def test_upstream_statuses_map_to_gateway_errors(
    upstream: int, status: int, code: str, retryable: bool
) -> None:
    err = error_for_status(upstream, ErrorDetail(message="boom"), ENDPOINT)
    assert (err.status, err.code, err.retryable, err.upstream_status) == (
        status,
        code,
        retryable,
        upstream,
    )


@pytest.mark.parametrize("code", ["context_length_exceeded", "content_policy_violation"])
def test_a_400_keeps_the_upstream_structured_code(code: str) -> None:
    err = error_for_status(400, ErrorDetail(message="no", code=code), ENDPOINT)
    assert (err.status, err.code, err.retryable) == (400, code, False)


def test_a_400_keeps_the_upstream_structured_code_and_param() -> None:
    detail = ErrorDetail(message="too long", code="context_length_exceeded", param="messages")
    err = error_for_status(400, detail, ENDPOINT)
    assert (err.code, err.param, err.type, err.message) == (
        "context_length_exceeded",
        "messages",
        "invalid_request_error",
        "too long",
    )


def test_a_structured_status_overrides_the_http_status() -> None:
    err = error_for_status(400, ErrorDetail(message="API key not valid", status=401), ENDPOINT)
    assert err.code == "upstream_auth_error"


def test_errors_never_echo_the_provider_key() -> None:
    leaked = ErrorDetail(message="Incorrect API key provided: sk-secret-key.")
    for status in (400, 401, 404, 429, 500):
        err = error_for_status(status, leaked, ENDPOINT)
        assert "sk-secret-key" not in orjson.dumps(err.body()).decode()


def test_429_carries_retry_after_and_sets_the_header() -> None:
    err = error_for_status(429, ErrorDetail(), ENDPOINT, {"Retry-After": "3"})
    assert err.retry_after == 3.0
    assert err.headers == {"Retry-After": "3"}


def _raised(exc: BaseException) -> ProviderError:
    with pytest.raises(ProviderError) as info, map_exceptions():
        raise exc
    return info.value


def test_transport_failures_map_to_retryable_provider_errors() -> None:
    assert _raised(TimeoutError()).code == "upstream_timeout"
    assert _raised(aiohttp.ServerTimeoutError()).status == 504
    assert _raised(aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)).code == (
        "upstream_unreachable"
    )
    assert _raised(ConnectionResetError()).code == "upstream_unreachable"
    assert _raised(aiohttp.ClientPayloadError("cut")).code == "upstream_disconnected"
    assert _raised(orjson.JSONDecodeError("bad", "{", 0)).code == "upstream_bad_response"
    assert all(
        _raised(exc).retryable
        for exc in (TimeoutError(), ConnectionResetError(), KeyError("choices"))
    )


def test_provider_errors_pass_through_untouched() -> None:
    original = ProviderError("x", status=400, code="invalid_request", retryable=False)
    assert _raised(original) is original


@pytest.mark.parametrize(
    ("whole", "marks"),
    [
        (False, [(0, True), (1, True), (2, False), ("last", True)]),
        (True, [(0, True), (1, True), (2, True), ("last", True)]),
    ],
    ids=["end-later", "whole-body"],
)
async def test_stream_marks_the_chunks_that_no_wait_separates_from_the_next(
    whole: bool, marks: list[tuple[object, bool]]
) -> None:
    """Three events arrive in one read: the first two are followed at once. The third is
    too when the body is complete (only the stream's end is left), not when its end comes
    later. The parser's closing chunk is always followed by the end."""
    from aiohttp import web

    from faregate.providers.base import StreamState
    from faregate.providers.http import Upstream

    events = b"".join(b'data: {"n": %d}\n\n' % n for n in range(3))

    async def sse(request: web.Request) -> web.StreamResponse:
        if whole:  # headers and body in one write, its length known
            return web.Response(body=events, content_type="text/event-stream")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(events)  # three events in one read
        await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    class Parser:
        def feed(self, event: SSEEvent) -> list[dict[str, object]]:
            return [orjson.loads(event.data)]

        def close(self) -> list[dict[str, object]]:
            return [{"n": "last"}]

    app = web.Application()
    app.router.add_post("/s", sse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        transport = HttpTransport()
        async with aiohttp.ClientSession() as session:
            upstream = Upstream(ENDPOINT, session, {}, lambda body: ErrorDetail(), transport)
            state = StreamState()
            seen = [
                (chunk["n"], state.more)
                async for chunk in upstream.stream(
                    f"http://127.0.0.1:{port}/s", {}, Parser(), state
                )
            ]
    finally:
        await transport.close()
        await runner.cleanup()
    assert seen == marks
