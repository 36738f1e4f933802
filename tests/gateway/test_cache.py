"""The response cache through the gateway: hits never reach the provider."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import aiohttp

from faregate.auth.service import KeyService
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import ADMIN_KEY, start_gateway

BODY = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "cache me"}],
}


async def _post(url: str, key: str, body: dict, headers: dict | None = None) -> tuple[dict, bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", **(headers or {})},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return dict(r.headers), await r.read()


async def test_identical_requests_are_answered_from_the_cache(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"cache": {"enabled": True, "hit_billing": "share", "share": "0.1"}},
    )
    try:
        first_headers, first = await _post(gw.url, gw.key, BODY)
        second_headers, second = await _post(gw.url, gw.key, BODY)
        assert mock.stats.requests == 1, second_headers
        assert first == second
        assert second_headers["x-faregate-cache"] == "hit"
        assert Decimal(second_headers["x-faregate-price"]) == Decimal(
            first_headers["x-faregate-price"]
        ) * Decimal("0.1")

        stream = {**BODY, "stream": True}
        _, streamed = await _post(gw.url, gw.key, stream)
        _, replayed = await _post(gw.url, gw.key, stream)
        assert replayed == streamed and mock.stats.requests == 2

        await _post(gw.url, gw.key, BODY, {"Cache-Control": "no-cache"})
        assert mock.stats.requests == 3
        hot = {**BODY, "temperature": 0.9}
        await _post(gw.url, gw.key, hot)
        await _post(gw.url, gw.key, hot)
        assert mock.stats.requests == 5  # sampled answers are not cached without an opt-in
    finally:
        await gw.runner.cleanup()


async def test_keys_opt_in_to_sampled_caching_and_requests_choose_the_ttl(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, {"cache": {"enabled": True}}
    )
    try:
        sampler, _ = await KeyService(gw.services.engine, ADMIN_KEY).create_key(
            name="s", customer_external_id="acme", settings={"cache_nonzero_temperature": True}
        )
        hot = {**BODY, "temperature": 0.7}
        await _post(gw.url, sampler, hot)
        headers, _ = await _post(gw.url, sampler, hot)
        assert headers.get("x-faregate-cache") == "hit" and mock.stats.requests == 1

        fleeting = {**BODY, "messages": [{"role": "user", "content": "do not keep"}]}
        await _post(gw.url, gw.key, fleeting, {"x-faregate-cache-ttl": "0"})
        await _post(gw.url, gw.key, fleeting)
        assert mock.stats.requests == 3  # a TTL of 0 stored nothing
        headers, _ = await _post(gw.url, gw.key, fleeting)
        assert headers.get("x-faregate-cache") == "hit" and mock.stats.requests == 3
    finally:
        await gw.runner.cleanup()
