"""Injected faults: error and rate-limit shares, hangs, dropped streams, malformed bodies, keys."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiohttp
import anthropic
import httpx2
import openai
import pytest

from faregate.mockprovider import MockBehaviour, MockConfig, MockServer, start_mock

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": CHAT["messages"]}
ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


async def statuses(http: aiohttp.ClientSession, url: str, count: int) -> Counter[int]:
    seen: Counter[int] = Counter()
    for _ in range(count):
        async with http.post(url, json=CHAT) as resp:
            await resp.read()
            seen[resp.status] += 1
    return seen


async def test_thirty_percent_error_rate_fails_about_thirty_percent_with_500_and_503(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(error_rate=0.3)
    seen = await statuses(http, mock.url + "/v1/chat/completions", 500)
    failures = seen[500] + seen[503]
    assert 120 <= failures <= 180
    assert seen[500] > 0 and seen[503] > 0
    assert seen[200] == 500 - failures


async def test_same_seed_repeats_the_same_fault_sequence_after_reset(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(error_rate=0.5)
    url = mock.url + "/v1/chat/completions"

    async def sequence() -> list[int]:
        out = []
        for _ in range(20):
            async with http.post(url, json=CHAT) as resp:
                out.append(resp.status)
        return out

    first = await sequence()
    async with http.post(mock.url + "/_mock/reset") as resp:
        assert resp.status == 200
    assert await sequence() == first


async def test_openai_errors_have_openai_shape_and_429_carries_retry_after(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(rate_limit_rate=1.0, retry_after=2.5)
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"
        assert resp.headers["retry-after-ms"] == "2500"
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "rate_limit_exceeded"
    mock.config.default = MockBehaviour(error_rate=1.0)
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status in (500, 503)
        assert (await resp.json())["error"]["type"] == "server_error"


async def test_a_429_can_leave_out_retry_after_ms_and_a_400_fault_is_a_bad_request(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(rate_limit_rate=1.0, retry_after=2, retry_after_ms=False)
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "2"
        assert "retry-after-ms" not in resp.headers
    mock.config.default = MockBehaviour(bad_request_rate=1.0)
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    mock.config.default = MockBehaviour(context_window=3)
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "context_length_exceeded"


async def test_sdk_sees_rate_limit_error_with_retry_after(
    mock: MockServer, openai_client: openai.AsyncOpenAI
) -> None:
    mock.config.default = MockBehaviour(rate_limit_rate=1.0)
    with pytest.raises(openai.RateLimitError) as caught:
        await openai_client.chat.completions.create(**CHAT)
    assert caught.value.response.headers["retry-after"] == "1"


async def test_anthropic_faults_are_rate_limit_and_overloaded_errors(
    mock: MockServer, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    mock.config.default = MockBehaviour(rate_limit_rate=1.0)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await anthropic_client.messages.create(**MESSAGES)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.body["error"]["type"] == "rate_limit_error"
    mock.config.default = MockBehaviour(error_rate=1.0)
    kinds = set()
    for _ in range(12):
        with pytest.raises(anthropic.APIStatusError) as failed:
            await anthropic_client.messages.create(**MESSAGES)
        kinds.add((failed.value.status_code, failed.value.body["error"]["type"]))
    assert kinds == {(500, "api_error"), (529, "overloaded_error")}


async def test_gemini_faults_use_google_statuses(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    mock.config.default = MockBehaviour(rate_limit_rate=1.0)
    async with http.post(url, json=body) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        error = (await resp.json())["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "1s"
    mock.config.default = MockBehaviour(error_rate=1.0)
    seen = set()
    for _ in range(12):
        async with http.post(url, json=body) as resp:
            seen.add((resp.status, (await resp.json())["error"]["status"]))
    assert seen == {(500, "INTERNAL"), (503, "UNAVAILABLE")}


async def test_hang_accepts_the_request_and_never_answers(
    mock: MockServer, openai_client: openai.AsyncOpenAI
) -> None:
    mock.config.default = MockBehaviour(hang=True)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await openai_client.with_options(timeout=0.3).chat.completions.create(**CHAT)
    assert time.monotonic() - started >= 0.3
    assert mock.stats.requests == 1


async def test_close_does_not_wait_for_hanging_requests(http: aiohttp.ClientSession) -> None:
    server = await start_mock(MockConfig(default=MockBehaviour(hang=True)))
    pending = asyncio.ensure_future(http.post(server.url + "/v1/chat/completions", json=CHAT))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await server.close()
    assert time.monotonic() - started < 1.0
    response = await pending
    response.release()


async def test_stream_is_dropped_after_the_configured_number_of_chunks(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(disconnect_after_chunks=3)
    events = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            mock.url + "/v1/chat/completions", json={**CHAT, "stream": True}
        ) as resp:
            assert resp.status == 200
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append(line)
    assert len(events) == 3


async def test_sdk_stream_raises_when_the_connection_drops(
    mock: MockServer, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    # message_start, content_block_start, ping, then one text delta before the drop.
    mock.config.default = MockBehaviour(disconnect_after_chunks=4)
    received = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        async with anthropic_client.messages.stream(**MESSAGES) as stream:
            async for text in stream.text_stream:
                received.append(text)
    assert received == ["Lorem"]


async def test_malformed_bodies_are_200_but_not_json(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(malformed_rate=1.0)
    async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        text = await resp.text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    async with http.post(
        mock.url + "/v1/messages", json={**MESSAGES, "stream": True}, headers=ANTHROPIC_HEADERS
    ) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        data = (await resp.text()).split("data: ", 1)[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)


async def test_required_key_is_checked_in_each_providers_way(
    mock: MockServer, openai_client: openai.AsyncOpenAI, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    mock.config.default = MockBehaviour(require_key="right")
    with pytest.raises(openai.AuthenticationError) as openai_denied:
        await openai_client.chat.completions.create(**CHAT)
    assert openai_denied.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        await anthropic_client.messages.create(**MESSAGES)
    reply = await openai_client.with_options(api_key="right").chat.completions.create(**CHAT)
    assert reply.choices[0].message.content
    message = await anthropic_client.with_options(api_key="right").messages.create(**MESSAGES)
    assert message.content[0].text


async def test_ttft_delays_first_byte_and_latency_delays_whole_replies(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = mock.url + "/v1/chat/completions"
    mock.config.default = MockBehaviour(ttft=0.15, chunk_delay=0.01)
    started = time.monotonic()
    async with http.post(url, json={**CHAT, "stream": True}) as resp:
        await resp.content.readline()
        first_byte = time.monotonic() - started
        await resp.read()
    total = time.monotonic() - started
    assert first_byte >= 0.15 and total >= 0.15 + 0.05
    started = time.monotonic()
    async with http.post(url, json=CHAT) as resp:
        await resp.read()
    assert time.monotonic() - started >= 0.15 + 5 * 0.01
    mock.config.default = MockBehaviour(latency=0.2)
    started = time.monotonic()
    async with http.post(url, json=CHAT) as resp:
        await resp.read()
    assert time.monotonic() - started >= 0.2
