"""Fixtures: a mock provider on a free loopback port, and official SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest

from faregate.mockprovider import MockServer, start_mock


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = await start_mock()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def openai_client(mock: MockServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=mock.url + "/v1", api_key="sk-test", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def anthropic_client(mock: MockServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=mock.url, api_key="sk-ant-test", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
