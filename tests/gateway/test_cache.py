"""The response cache through the gateway: hits never reach the provider."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import aiohttp

from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import start_gateway

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
