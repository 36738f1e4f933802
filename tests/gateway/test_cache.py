"""The response cache through the gateway: hits never reach the provider; image generations,
per-request opt-in and the in-process LRU's size limits."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from faregate.auth.service import KeyService
from faregate.mockprovider.server import MockServer
from faregate.money import to_nanos
from faregate.store.tables.metering import requests
from tests.gateway.conftest import ADMIN_KEY, Running, sse_comment, sse_events, start_gateway

BODY = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "cache me"}],
}


async def _post(
    url: str,
    key: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> tuple[dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{url}{path}",
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
        assert sse_events(replayed) == sse_events(streamed) and mock.stats.requests == 2
        # Only the closing cost comment differs: a hit is billed its share of the price.
        price = sse_comment(streamed, "x-faregate-price") * Decimal("0.1")
        assert sse_comment(replayed, "x-faregate-price") == price

        await _post(gw.url, gw.key, BODY, {"Cache-Control": "no-cache"})
        assert mock.stats.requests == 3
        hot = {**BODY, "temperature": 0.9}
        await _post(gw.url, gw.key, hot)
        await _post(gw.url, gw.key, hot)
        assert mock.stats.requests == 5  # sampled answers are not cached without an opt-in
    finally:
        await gw.runner.cleanup()


async def test_a_stream_relayed_as_received_is_cached_and_replayed_whole(
    tmp_path: Path, mock: MockServer
) -> None:
    """A client that asks for usage gets OpenAI's content events as the upstream sent them;
    the cache still records every chunk, and replays them to any client."""
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, {"cache": {"enabled": True}}
    )
    try:
        body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
        _, relayed = await _post(gw.url, gw.key, body)
        _, replayed = await _post(gw.url, gw.key, body)
        assert mock.stats.requests == 1
        assert sse_events(replayed) == sse_events(relayed)
        _, plain = await _post(gw.url, gw.key, {**body, "stream_options": {}})
        assert mock.stats.requests == 1
        # Without usage asked for: the same chunks, less the usage chunk and field.
        chunks = [line for line in sse_events(relayed) if b'"choices":[]' not in line]
        without = [line.replace(b',"usage":null', b"") for line in chunks if line]
        assert [line for line in sse_events(plain) if line] == without
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


async def _gateway(tmp_path: Path, mock: MockServer, cache: dict[str, Any]) -> Running:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    return await start_gateway(tmp_path, url, mock, {"cache": {"enabled": True, **cache}})


def _ask(text: str) -> dict[str, Any]:
    return {**BODY, "messages": [{"role": "user", "content": text}]}


async def _saved_nanos(gw: Running, request_id: str) -> int:
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        query = select(requests.c.saved_nanos).where(requests.c.id == request_id)
        return int((await conn.execute(query)).scalar_one())


async def test_an_identical_image_generation_is_answered_from_the_cache_and_billed_as_a_hit(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _gateway(tmp_path, mock, {"hit_billing": "share", "share": "0.25"})
    image = {"model": "dall-e-3", "prompt": "a lighthouse at dusk", "size": "1024x1024"}
    try:
        fresh_headers, fresh = await _post(gw.url, gw.key, image, path="/v1/images/generations")
        hit_headers, hit = await _post(gw.url, gw.key, image, path="/v1/images/generations")
        assert mock.stats.requests == 1  # the second generation never reached the provider
        assert hit == fresh and hit_headers["x-faregate-cache"] == "hit"
        price = Decimal(fresh_headers["x-faregate-price"])
        assert price > 0 and "x-faregate-cache" not in fresh_headers
        assert Decimal(hit_headers["x-faregate-price"]) == price * Decimal("0.25")
        assert Decimal(hit_headers["x-faregate-cost"]) == 0
        saved = await _saved_nanos(gw, hit_headers["x-faregate-request-id"])
        assert saved == to_nanos(price * Decimal("0.75"))

        other = {**image, "size": "1024x1792"}
        await _post(gw.url, gw.key, other, path="/v1/images/generations")
        assert mock.stats.requests == 2  # another size is another image
    finally:
        await gw.runner.cleanup()


async def test_image_caching_can_be_turned_off(tmp_path: Path, mock: MockServer) -> None:
    gw = await _gateway(tmp_path, mock, {"images": False})
    image = {"model": "dall-e-3", "prompt": "a fresh draw each time"}
    try:
        for _ in range(2):
            headers, _ = await _post(gw.url, gw.key, image, path="/v1/images/generations")
            assert "x-faregate-cache" not in headers
        assert mock.stats.requests == 2
    finally:
        await gw.runner.cleanup()


async def test_with_opt_in_a_request_opts_itself_in_with_the_cache_header(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _gateway(tmp_path, mock, {"opt_in": True})
    on = {"x-faregate-cache": "on"}
    try:
        await _post(gw.url, gw.key, BODY)
        await _post(gw.url, gw.key, BODY)
        assert mock.stats.requests == 2  # the key did not opt in, the requests did not either

        await _post(gw.url, gw.key, BODY, on)
        headers, _ = await _post(gw.url, gw.key, BODY, on)
        assert headers["x-faregate-cache"] == "hit" and mock.stats.requests == 3
        headers, _ = await _post(gw.url, gw.key, BODY, {"x-faregate-cache": "off"})
        assert "x-faregate-cache" not in headers and mock.stats.requests == 4

        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gw.url}/v1/chat/completions",
                json=BODY,
                headers={"Authorization": f"Bearer {gw.key}", "x-faregate-cache": "sometimes"},
            ) as r,
        ):
            error = (await r.json())["error"]
        assert r.status == 400 and error["param"] == "x-faregate-cache"
        assert mock.stats.requests == 4
    finally:
        await gw.runner.cleanup()


async def test_the_in_process_cache_evicts_the_least_recent_entry_past_max_entries(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _gateway(tmp_path, mock, {"max_entries": 2})
    try:
        for text in ("one", "two", "three"):
            await _post(gw.url, gw.key, _ask(text))
        assert mock.stats.requests == 3
        headers, _ = await _post(gw.url, gw.key, _ask("three"))
        assert headers["x-faregate-cache"] == "hit"
        headers, _ = await _post(gw.url, gw.key, _ask("two"))
        assert headers["x-faregate-cache"] == "hit" and mock.stats.requests == 3
        headers, _ = await _post(gw.url, gw.key, _ask("one"))  # evicted by "three"
        assert "x-faregate-cache" not in headers and mock.stats.requests == 4
    finally:
        await gw.runner.cleanup()


async def test_the_in_process_cache_keeps_no_more_than_max_bytes(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _gateway(tmp_path, mock, {"max_bytes": 64})  # smaller than any answer
    try:
        await _post(gw.url, gw.key, BODY)
        headers, _ = await _post(gw.url, gw.key, BODY)
        assert "x-faregate-cache" not in headers and mock.stats.requests == 2
    finally:
        await gw.runner.cleanup()


async def test_requests_the_cache_has_no_key_for_pass_by_it(
    tmp_path: Path, mock: MockServer
) -> None:
    """With the cache on, moderations and transcriptions were a 500 (no cache key for them)."""
    from tests.gateway.conftest import gateway_config
    from tests.gateway.test_transcriptions import wav

    models = gateway_config(mock.url)["models"] + [
        {
            "name": "omni-moderation-latest",
            "kind": "moderations",
            "deployments": [{"provider": "openai", "model": "omni-moderation-latest"}],
        },
        {
            "name": "whisper-1",
            "kind": "transcriptions",
            "deployments": [{"provider": "openai", "model": "whisper-1"}],
        },
    ]
    gw = await start_gateway(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'g.db'}",
        mock,
        {"cache": {"enabled": True, "allow_nonzero_temperature": True}, "models": models},
    )
    try:
        for _ in range(2):
            await _post(gw.url, gw.key, {"input": "a quiet walk"}, path="/v1/moderations")
        form = aiohttp.FormData()
        form.add_field("model", "whisper-1")
        form.add_field("file", wav(1.0), filename="a.wav", content_type="audio/wav")
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gw.url}/v1/audio/transcriptions",
                data=form,
                headers={"Authorization": f"Bearer {gw.key}"},
            ) as r,
        ):
            assert r.status == 200, await r.text()
        assert mock.stats.requests == 3  # nothing answered from the cache

        # A field faregate does not know, passed through to the host, splits the entry.
        await _post(gw.url, gw.key, BODY | {"top_k": 1})
        headers, _ = await _post(gw.url, gw.key, BODY | {"top_k": 50})
        assert "x-faregate-cache" not in headers and mock.stats.requests == 5
        headers, _ = await _post(gw.url, gw.key, BODY | {"top_k": 50})
        assert headers["x-faregate-cache"] == "hit" and mock.stats.requests == 5
    finally:
        await gw.runner.cleanup()
