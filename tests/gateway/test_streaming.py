"""Streams pass through as they arrive, and a client that leaves cancels the upstream."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import pytest

from faregate.gateway.call import Call
from faregate.mockprovider.config import MockBehaviour
from faregate.providers.base import Relayed
from tests.gateway.conftest import Running

BODY = {
    "model": "gpt-4o-mini",
    "stream": True,
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "count"}],
}


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_the_first_chunk_reaches_the_client_before_the_upstream_finishes(
    gateway: Running,
) -> None:
    gateway.mock.config.deployments["openai"] = MockBehaviour(chunk_delay=0.05, output_tokens=20)
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gateway.url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {gateway.key}"},
        ) as r,
    ):
        first = await r.content.readline()
        first_at = time.perf_counter() - started
        rest = await r.read()
        total = time.perf_counter() - started
    assert first.startswith(b"data: ")
    assert total >= 0.9  # 20 chunks, 50 ms apart upstream
    # The other 19 chunks take the upstream about 0.95 s more: passed through, they arrive
    # over that time after the first; buffered, they would all arrive with it. Measured from
    # the first chunk, so a slow start (connection, auth, a loaded machine) does not count.
    assert total - first_at >= 0.6, (first_at, total)
    assert rest.rstrip().endswith(b"data: [DONE]")


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_a_client_that_leaves_mid_stream_is_recorded_and_releases_its_slot(
    gateway: Running,
) -> None:
    gateway.mock.config.deployments["openai"] = MockBehaviour(chunk_delay=0.05, output_tokens=20)
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{gateway.url}/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {gateway.key}"},
        )
        await r.content.readline()
        r.close()  # the client goes away after the first chunk
    await asyncio.sleep(0.5)
    await gateway.services.writer.flush()
    from sqlalchemy import select

    from faregate.store.tables.metering import requests

    async with gateway.services.engine.connect() as conn:
        row = (await conn.execute(select(requests.c.status, requests.c.usage_estimated))).first()
    assert row is not None and row.status == 499 and row.usage_estimated


_ID = re.compile(rb'"id":"[^"]*","object":"chat.completion.chunk","created":\d+')


def _events(raw: bytes) -> list[bytes]:
    """A stream's `data:` lines, each chunk's id and time (new for every answer) blanked."""
    return [
        _ID.sub(b'"id":"","object":"chat.completion.chunk","created":0', line)
        for line in raw.split(b"\n")
        if line.startswith(b"data: ")
    ]


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_a_client_that_asked_for_usage_gets_the_upstream_events_as_sent(
    gateway: Running,
) -> None:
    """With include_usage, the OpenAI upstream's content events go to the client unparsed:
    the gateway's stream is the upstream's own, event for event (the cost comment added)."""
    body = {**BODY, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{gateway.mock.url_for('openai')}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer k"},
        ) as r:
            upstream = await r.read()
        async with s.post(
            f"{gateway.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gateway.key}"},
        ) as r:
            assert r.status == 200
            relayed = await r.read()
    assert len(_events(upstream)) == 24  # role, 20 words, finish, usage, [DONE]
    assert _events(relayed) == _events(upstream)


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_the_gateway_relays_content_runs_only_to_a_caller_that_takes_them(
    gateway: Running,
) -> None:
    principal = await gateway.services.keys.authenticate(gateway.key)
    body = {**BODY, "stream_options": {"include_usage": True}}
    seen: dict[bool, list[Any]] = {}
    for relay in (True, False):
        call = Call(f"relay-{relay}", principal, "chat", "gpt-4o-mini", dict(body), stream=True)
        seen[relay] = [
            item async for item in gateway.services.gateway.chat_stream(call, relay=relay)
        ]
        assert call.usage is not None and not call.usage.estimated
        assert call.usage.output_tokens == 20
    # Every event as the upstream sent it: the role, 20 words, the finish and the usage.
    assert all(type(item) is Relayed for item in seen[True])
    assert sum(run.count() for run in seen[True]) == 23
    assert all(type(item) is dict for item in seen[False])
    chunks = [
        c for item in seen[True] for c in (item.chunks() if type(item) is Relayed else [item])
    ]
    assert [c["choices"] for c in chunks] == [c["choices"] for c in seen[False]]
