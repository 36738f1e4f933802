"""Per-deployment prefixes, request counters and the runtime control routes."""

from __future__ import annotations

import aiohttp
import openai

from faregate.mockprovider import MockBehaviour, MockConfig, MockServer, start_mock

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def test_deployment_prefix_selects_that_deployments_behaviour(
    http: aiohttp.ClientSession,
) -> None:
    config = MockConfig(deployments={"broken": MockBehaviour(error_rate=1.0)})
    async with await start_mock(config) as mock:
        async with http.post(mock.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 200
        async with http.post(mock.url_for("broken") + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status in (500, 503)
        # A name without its own behaviour falls back to the default.
        async with http.post(mock.url + "/d/other/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 200
        assert mock.stats.by_deployment == {"default": 1, "broken": 1, "other": 1}


async def test_sdk_clients_work_under_a_deployment_prefix(mock: MockServer) -> None:
    client = openai.AsyncOpenAI(
        base_url=mock.url_for("primary") + "/v1", api_key="k", max_retries=0
    )
    async with client:
        await client.chat.completions.create(**CHAT)
    assert mock.stats.requests_for(deployment="primary", route="/v1/chat/completions") == 1


async def test_stats_count_by_route_deployment_and_model(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    await http.post(mock.url + "/v1/chat/completions", json=CHAT)
    await http.post(mock.url + "/d/a/v1/chat/completions", json={**CHAT, "model": "gpt-4o-mini"})
    await http.post(mock.url + "/v1/embeddings", json={"model": "e", "input": "x"})
    url = mock.url + "/v1beta/models/gemini-2.0-flash:generateContent"
    await http.post(url, json={"contents": [{"parts": [{"text": "x"}]}]})
    stats = mock.stats
    assert stats.requests == 4
    assert stats.by_route == {
        "/v1/chat/completions": 2,
        "/v1/embeddings": 1,
        "/v1beta/models/{model}:generateContent": 1,
    }
    assert stats.by_model["gemini-2.0-flash"] == 1
    assert stats.requests_for(route="/v1/chat/completions") == 2
    assert stats.requests_for(deployment="a") == 1
    assert stats.requests_for(route="/v1/chat/completions", model="gpt-4o-mini") == 1
    assert stats.requests_for(deployment="a", route="/v1/embeddings") == 0
    async with http.get(mock.url + "/_mock/stats") as resp:
        body = await resp.json()
    assert body["requests"] == 4 and body["by_deployment"] == {"default": 3, "a": 1}
    assert mock.stats.requests == 4  # reading stats is not a provider request


async def test_reset_zeroes_the_counters(mock: MockServer, http: aiohttp.ClientSession) -> None:
    await http.post(mock.url + "/v1/chat/completions", json=CHAT)
    async with http.post(mock.url + "/_mock/reset") as resp:
        assert (await resp.json())["requests"] == 0
    assert mock.stats.requests == 0 and mock.stats.by_route == {}


async def test_put_replaces_a_deployments_behaviour_at_runtime(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = mock.url_for("edge") + "/v1/chat/completions"
    async with http.post(url, json=CHAT) as resp:
        assert resp.status == 200
    async with http.put(
        mock.url + "/_mock/deployments/edge", json={"rate_limit_rate": 1.0}
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["rate_limit_rate"] == 1.0
    async with http.post(url, json=CHAT) as resp:
        assert resp.status == 429
    assert mock.config.deployments["edge"].rate_limit_rate == 1.0
    async with http.delete(mock.url + "/_mock/deployments/edge") as resp:
        assert resp.status == 204
    async with http.post(url, json=CHAT) as resp:
        assert resp.status == 200


async def test_put_rejects_unknown_fields_and_bad_rates(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    for body in ({"colour": "red"}, {"error_rate": 2}, {"ttft": "slow"}, [1]):
        async with http.put(mock.url + "/_mock/deployments/x", json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["message"]
    assert "x" not in mock.config.deployments


async def test_config_route_shows_the_live_config(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.deployments["slow"] = MockBehaviour(ttft=0.5)
    async with http.get(mock.url + "/_mock/config") as resp:
        body = await resp.json()
    assert body["deployments"]["slow"]["ttft"] == 0.5 and body["seed"] == 0
