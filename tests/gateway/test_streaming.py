"""Streams pass through as they arrive, and a client that leaves cancels the upstream."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from faregate.mockprovider.config import MockBehaviour
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
