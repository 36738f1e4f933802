"""Malformed requests found by probing every adapter: each is a 400 (Anthropic's shape on
/v1/messages) naming the field, never a 500, and none of them, nor a request the upstream
fails on every retry, takes its model from the requests after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from faregate.api import anthropic_wire
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

USER = {"role": "user", "content": "hi"}
MODELS = ["gpt-4o-mini", "claude-sonnet-4", "gemini-2.5-flash", "mistral-large"]
CALL = {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
# (body fields, the param named). Each used to fail inside faregate or the upstream (a 500,
# or a 502 counted against the deployment).
OPENAI_CASES: list[tuple[dict[str, Any], str]] = [
    ({"response_format": {"type": "json_schema", "json_schema": 5}}, "response_format.json_schema"),
    ({"stream": True, "stream_options": "x"}, "stream_options"),
    ({"tools": [{"function": {"name": "f", "parameters": 5}}]}, "tools[0].function.parameters"),
    ({"tools": [{"function": {"name": "f", "description": 5}}]}, "tools[0].function.description"),
    (
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": "x"}, USER]},
        "messages[1].tool_calls",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": 5}]}]},
        "messages[0].content[0].file",
    ),
]
ANTHROPIC_CASES: list[tuple[dict[str, Any], str]] = [
    ({"system": 5}, "system"),
    ({"metadata": 5}, "metadata"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
        "messages[0].content[0].source",
    ),
]


async def _post(gw: Running, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {gw.key}", "x-api-key": gw.key}
    async with aiohttp.ClientSession() as s, s.post(gw.url + path, json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> Any:
    running = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock)
    yield running
    await running.runner.cleanup()


@pytest.mark.parametrize("model", MODELS)
async def test_malformed_chat_requests_are_400s_and_leave_the_model_serving(
    gw: Running, model: str
) -> None:
    for fields, param in OPENAI_CASES:
        body = {"model": model, "messages": [USER], **fields}
        status, reply = await _post(gw, "/v1/chat/completions", body)
        assert (status, reply["error"]["param"]) == (400, param), reply
    for fields, param in ANTHROPIC_CASES:
        body = {"model": model, "max_tokens": 8, "messages": [USER], **fields}
        status, reply = await _post(gw, "/v1/messages", body)
        assert status == 400, reply
        assert reply["type"] == "error" and param.split(".")[0] in reply["error"]["message"]
    status, reply = await _post(gw, "/v1/chat/completions", {"model": model, "messages": [USER]})
    assert status == 200, reply


async def test_a_request_failing_on_every_retry_leaves_the_deployment_to_the_next(
    gw: Running, mock: MockServer
) -> None:
    mock.config.deployments["openai"] = MockBehaviour(error_rate=1.0)
    status, reply = await _post(
        gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [USER]}
    )
    assert status == 502, reply
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with (
        aiohttp.ClientSession(headers=admin) as s,
        s.get(gw.url + "/api/v1/deployments/health") as r,
    ):
        rows = {row["deployment"]: row for row in (await r.json())["deployments"]}
    [openai_row] = [row for name, row in rows.items() if name.startswith("gpt-4o-mini/")]
    assert (openai_row["state"], openai_row["consecutive_failures"]) == ("closed", 1)
    mock.config.deployments["openai"] = MockBehaviour()
    status, reply = await _post(
        gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [USER]}
    )
    assert status == 200, reply


async def test_an_unexpected_failure_on_v1_messages_is_an_anthropic_error(
    gw: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(body: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(anthropic_wire, "request_to_openai", broken)
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    async with client:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await client.messages.create(model="claude-sonnet-4", max_tokens=8, messages=[USER])  # type: ignore[list-item]
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "a bug" not in str(caught.value.body)
