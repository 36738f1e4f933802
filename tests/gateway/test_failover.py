"""Failover through the running gateway, with the mock provider's fault injection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import Running, start_gateway

BODY = {"model": "flaky", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def _flaky_group(mock_url: str) -> dict:
    return {
        "providers": {
            "primary": {"wire": "openai", "base_url": f"{mock_url}/d/primary/v1", "api_key": "k"},
            "backup": {"wire": "anthropic", "base_url": f"{mock_url}/d/backup", "api_key": "k"},
            "openai": {"wire": "openai", "base_url": f"{mock_url}/d/openai/v1", "api_key": "k"},
        },
        "models": [
            {
                "name": "flaky",
                "strategy": "priority",
                "deployments": [
                    {"provider": "primary", "model": "gpt-4o-mini"},
                    {"provider": "backup", "model": "claude-sonnet-4"},
                ],
            },
            {
                "name": "gpt-4o-mini",
                "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
            },
        ],
    }


async def test_a_primary_failing_30_percent_loses_no_request(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["primary"] = MockBehaviour(error_rate=0.3)
    config = _flaky_group(mock.url)
    # A breaker that never opens here, so every one of the 1,000 requests tries the failing
    # primary first and the backup serves exactly its failures: failover, not a breaker that
    # opened half-way, keeps every request whole.
    config["routing"] = {"breaker": {"failure_threshold": 100_000, "min_requests": 100_000}}
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s:
            sem = asyncio.Semaphore(32)

            async def one() -> tuple[int, str]:
                async with sem, s.post(f"{gw.url}/v1/chat/completions", json=BODY) as r:
                    await r.read()
                    return r.status, r.headers.get("x-faregate-attempts", "")

            results = await asyncio.gather(*(one() for _ in range(1000)))
        assert [status for status, _ in results].count(200) == 1000
        failed_over = [attempts for _, attempts in results].count("2")
        assert mock.stats.requests_for(deployment="primary") == 1000  # it took every request
        assert mock.stats.requests_for(deployment="backup") == failed_over
        assert 240 <= failed_over <= 360  # the primary's ~30 % failures, all of them saved
        assert [attempts for _, attempts in results].count("1") == 1000 - failed_over
    finally:
        await gw.runner.cleanup()


async def test_a_stream_that_breaks_after_its_first_chunk_ends_with_an_error_event(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["primary"] = MockBehaviour(disconnect_after_chunks=3)
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _flaky_group(mock.url)
    )
    try:
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {gw.key}"}) as s,
            s.post(f"{gw.url}/v1/chat/completions", json={**BODY, "stream": True}) as r,
        ):
            assert r.status == 200
            raw = await r.read()
        events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        content = [orjson.loads(e)["choices"] for e in events[:-2]]
        assert any(c and c[0]["delta"].get("content") for c in content)  # before the error
        error = orjson.loads(events[-2])["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert mock.stats.requests_for(deployment="backup") == 0  # not retried after the first byte
    finally:
        await gw.runner.cleanup()


async def _post(gw: Running, body: dict[str, Any], path: str = "/v1/chat/completions") -> Any:
    headers = {"Authorization": f"Bearer {gw.key}", "x-api-key": gw.key}
    async with aiohttp.ClientSession() as s, s.post(gw.url + path, json=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def _flaky(tmp_path: Path, mock: MockServer, primary: MockBehaviour) -> Running:
    mock.config.deployments["primary"] = primary
    return await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _flaky_group(mock.url)
    )


async def test_a_400_from_the_primary_is_returned_and_never_tried_on_the_backup(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _flaky(tmp_path, mock, MockBehaviour(bad_request_rate=1.0))
    try:
        status, _, raw = await _post(gw, BODY)
        assert status == 400
        assert orjson.loads(raw)["error"]["type"] == "invalid_request_error"
        assert mock.stats.requests_for(deployment="primary") == 1
        assert mock.stats.requests_for(deployment="backup") == 0
    finally:
        await gw.runner.cleanup()


async def test_a_401_from_the_primary_is_a_502_for_the_client_and_never_tried_on_the_backup(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _flaky(tmp_path, mock, MockBehaviour(require_key="the-right-key"))
    try:
        status, _, raw = await _post(gw, BODY)
        # The client's own key was fine: the gateway's provider credentials were not.
        assert status == 502
        error = orjson.loads(raw)["error"]
        assert error["code"] == "upstream_auth_error" and "the-right-key" not in raw.decode()
        assert mock.stats.requests_for(deployment="primary") == 1
        assert mock.stats.requests_for(deployment="backup") == 0
    finally:
        await gw.runner.cleanup()


async def test_a_context_length_error_switches_to_the_larger_window_group(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["primary"] = MockBehaviour(context_window=50)
    config = _flaky_group(mock.url)
    config["models"][0]["context_window_fallbacks"] = ["gpt-4o-mini"]
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        short = {**BODY, "messages": [{"role": "user", "content": "short"}]}
        status, headers, _ = await _post(gw, short)
        assert (status, headers["x-faregate-deployment"]) == (200, "flaky/primary/0")
        long = {**BODY, "messages": [{"role": "user", "content": "x" * 400}]}  # ~104 tokens
        status, headers, raw = await _post(gw, long)
        assert status == 200, raw
        assert headers["x-faregate-deployment"] == "gpt-4o-mini/openai/0"
        assert headers["x-faregate-attempts"] == "2"
        assert mock.stats.requests_for(deployment="primary") == 2
        assert mock.stats.requests_for(deployment="backup") == 0  # not a retryable failure
        assert mock.stats.requests_for(deployment="openai") == 1
    finally:
        await gw.runner.cleanup()


async def test_an_anthropic_stream_that_breaks_after_its_first_chunk_ends_with_an_error_event(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await _flaky(tmp_path, mock, MockBehaviour(disconnect_after_chunks=3))
    try:
        body = {**BODY, "stream": True}
        status, _, raw = await _post(gw, body, "/v1/messages")
        assert status == 200
        blocks = [b for b in raw.decode().split("\n\n") if b.startswith("event: ")]
        names = [block.split("\n")[0][len("event: ") :] for block in blocks]
        assert names[0] == "message_start" and names[-1] == "error"
        assert "message_stop" not in names
        error = orjson.loads(blocks[-1].split("\n")[1][len("data: ") :])
        assert error["type"] == "error"
        assert set(error["error"]) == {"type", "message"} and error["error"]["message"]
        assert mock.stats.requests_for(deployment="backup") == 0  # not retried after a byte
    finally:
        await gw.runner.cleanup()


async def _record(db: Path, request_id: str) -> tuple[Any, ...]:
    """(status, error_code, deployment, attempts) of a stored request record."""
    for _ in range(200):  # the usage writer stores records in batches
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT status, error_code, deployment, attempts FROM requests WHERE id = ?",
                (request_id,),
            ).fetchone()
        if row is not None:
            return tuple(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record of {request_id}")


async def test_a_request_that_failed_everywhere_says_how_many_calls_it_made(
    tmp_path: Path, mock: MockServer
) -> None:
    mock.config.deployments["primary"] = MockBehaviour(error_rate=1.0)
    mock.config.deployments["backup"] = MockBehaviour(error_rate=1.0)
    config = _flaky_group(mock.url)
    config["routing"] = {"max_attempts": 3}
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        status, headers, raw = await _post(gw, BODY)
        assert (status, orjson.loads(raw)["error"]["code"]) == (502, "upstream_error")
        assert mock.stats.requests == 3  # primary, backup, primary again after a backoff
        assert headers["x-faregate-attempts"] == "3"
        record = await _record(tmp_path / "g.db", headers["x-faregate-request-id"])
        assert record == (502, "upstream_error", "flaky/primary/0", 3)
    finally:
        await gw.runner.cleanup()


async def test_a_429_whose_retry_after_outlasts_the_backoff_says_how_many_calls_it_made(
    tmp_path: Path, mock: MockServer
) -> None:
    # Longer than the request's deadline (600 s): nothing to wait for.
    mock.config.deployments["primary"] = MockBehaviour(rate_limit_rate=1.0, retry_after=700.0)
    mock.config.deployments["backup"] = MockBehaviour(rate_limit_rate=1.0, retry_after=700.0)
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _flaky_group(mock.url)
    )
    try:
        status, headers, _ = await _post(gw, {**BODY, "stream": True})
        assert (status, headers["Retry-After"], headers["x-faregate-attempts"]) == (429, "700", "2")
        record = await _record(tmp_path / "g.db", headers["x-faregate-request-id"])
        assert record[2:] == ("flaky/backup/1", 2)
    finally:
        await gw.runner.cleanup()


async def test_a_prompt_too_long_for_the_context_fallback_calls_it_once(
    tmp_path: Path, mock: MockServer
) -> None:
    # Too long for every deployment of `flaky` (declared), so the plan is the context
    # fallback at once; when it refuses the prompt too, there is nothing to switch to.
    mock.config.deployments["openai"] = MockBehaviour(context_window=50)
    config = _flaky_group(mock.url)
    for deployment in config["models"][0]["deployments"]:
        deployment["max_input_tokens"] = 50
    config["models"][0]["context_window_fallbacks"] = ["gpt-4o-mini"]
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, config)
    try:
        long = {**BODY, "messages": [{"role": "user", "content": "x" * 400}]}  # ~104 tokens
        status, headers, raw = await _post(gw, long)
        assert (status, orjson.loads(raw)["error"]["code"]) == (400, "context_length_exceeded")
        assert headers["x-faregate-attempts"] == "1"
        assert mock.stats.requests_for(deployment="openai") == 1
        assert mock.stats.requests == 1
    finally:
        await gw.runner.cleanup()
