"""Every failure is an OpenAI-shaped JSON error with the right status, never a traceback."""

from __future__ import annotations

import io

import aiohttp
import pytest

from faregate.mockprovider.config import MockBehaviour
from tests.gateway.conftest import ADMIN_KEY, Running

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _post(
    gw: Running,
    path: str,
    *,
    data: object = None,
    json: dict | None = None,
    key: str | None = "use",
    headers: dict | None = None,
) -> tuple[int, dict]:
    hdrs = dict(headers or {})
    if key == "use":
        hdrs["Authorization"] = f"Bearer {gw.key}"
    elif key:
        hdrs["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.url + path, data=data, json=json, headers=hdrs) as r,
    ):
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("case", "status", "code", "param"),
    [
        ("malformed_json", 400, "invalid_json", None),
        ("missing_messages", 400, "missing_required_parameter", "messages"),
        ("bad_temperature", 400, "invalid_value", "temperature"),
        ("unknown_model", 404, "model_not_found", "model"),
        ("missing_key", 401, "missing_api_key", None),
        ("bad_key", 401, "invalid_api_key", None),
        ("too_large", 413, "request_too_large", None),
        ("upstream_400", 400, "context_length_exceeded", None),
        ("upstream_500", 502, "upstream_error", None),
        ("unknown_path", 404, "not_found", None),
    ],
)
async def test_error_table(
    gateway: Running, case: str, status: int, code: str, param: str | None
) -> None:
    path, kwargs = "/v1/chat/completions", {"json": CHAT}
    if case == "malformed_json":
        kwargs = {"data": b"{not json", "headers": {"Content-Type": "application/json"}}
    elif case == "missing_messages":
        kwargs = {"json": {"model": "gpt-4o-mini"}}
    elif case == "bad_temperature":
        kwargs = {"json": {**CHAT, "temperature": 9}}
    elif case == "unknown_model":
        kwargs = {"json": {**CHAT, "model": "nope"}}
    elif case == "missing_key":
        kwargs["key"] = None
    elif case == "bad_key":
        kwargs["key"] = "fg_0123456789_wrongwrongwrong"
    elif case == "too_large":
        kwargs = {"data": io.BytesIO(b"x" * (gateway.settings.max_body_bytes + 10))}
    elif case == "upstream_400":
        kwargs = {
            "json": {**CHAT, "messages": [{"role": "user", "content": "context_length_exceeded"}]}
        }
    elif case == "upstream_500":
        gateway.mock.config.deployments["openai"] = MockBehaviour(error_rate=1.0)
    elif case == "unknown_path":
        path = "/v1/nothing"
    got_status, body = await _post(gateway, path, **kwargs)
    assert got_status == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    if param:
        assert error["param"] == param
    assert "Traceback" not in error["message"] and gateway.key not in error["message"]


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_revoked_and_disallowed_keys(gateway: Running) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(headers=admin) as s:
        async with s.post(
            gateway.url + "/admin/keys",
            json={"customer": "acme", "allowed_models": ["claude-sonnet-4"]},
        ) as r:
            created = await r.json()
        limited = created["key"]
        status, body = await _post(gateway, "/v1/chat/completions", json=CHAT, key=limited)
        assert (status, body["error"]["code"]) == (403, "model_not_allowed")
        async with s.delete(f"{gateway.url}/admin/keys/{created['api_key']['id']}") as r:
            assert r.status == 200
    status, body = await _post(gateway, "/v1/chat/completions", json=CHAT, key=limited)
    assert (status, body["error"]["code"]) == (401, "revoked_api_key")


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_an_expired_key_is_refused(gateway: Running) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with (
        aiohttp.ClientSession(headers=admin) as s,
        s.post(
            gateway.url + "/admin/keys",
            json={"customer": "acme", "expires_at": "2020-01-01T00:00:00+00:00"},
        ) as r,
    ):
        expired = (await r.json())["key"]
    status, body = await _post(gateway, "/v1/chat/completions", json=CHAT, key=expired)
    assert (status, body["error"]["code"]) == (401, "expired_api_key")
