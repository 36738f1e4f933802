"""`PATCH /admin/keys/{id}` and `faregate keys update`: a key's models, tags, settings, expiry
and subscription change in place, this replica's next request sees the change, and a key
whose stored settings cannot be used is refused with a clear error until it is corrected."""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from sqlalchemy import update

from faregate.cli import main
from faregate.mockprovider.server import MockServer
from faregate.store.tables.gateway import api_keys
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> Any:
    running = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock)
    yield running
    await running.runner.cleanup()


async def _admin(gw: Running, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=ADMIN) as s,
        s.request(method, gw.url + path, json=body) as r,
    ):
        return r.status, await r.json()


async def _new_key(gw: Running, **fields: Any) -> tuple[str, str]:
    status, made = await _admin(gw, "POST", "/admin/keys", {"customer": "acme", **fields})
    assert status == 201, made
    return made["key"], made["api_key"]["id"]


async def _chat(gw: Running, key: str, model: str = "gpt-4o-mini") -> Any:
    async with openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0) as c:
        return await c.chat.completions.create(model=model, messages=HI, max_tokens=3)  # type: ignore[arg-type]


async def test_a_change_applies_to_the_next_request(gw: Running) -> None:
    key, key_id = await _new_key(gw, allowed_models=["gpt-4o-mini"], name="old")
    await _chat(gw, key)
    with pytest.raises(openai.PermissionDeniedError):
        await _chat(gw, key, "claude-sonnet-4")

    status, body = await _admin(
        gw,
        "PATCH",
        f"/admin/keys/{key_id}",
        {"allowed_models": ["claude-sonnet-4"], "name": "new", "tags": ["batch"]},
    )
    assert status == 200, body
    changed = body["api_key"]
    assert (changed["name"], changed["allowed_models"], changed["tags"]) == (
        "new",
        ["claude-sonnet-4"],
        ["batch"],
    )
    assert "key_hash" not in changed
    await _chat(gw, key, "claude-sonnet-4")  # no wait for the cache: invalidated
    with pytest.raises(openai.PermissionDeniedError):
        await _chat(gw, key)

    # null clears: any model again; what was not sent is unchanged.
    status, body = await _admin(gw, "PATCH", f"/admin/keys/{key_id}", {"allowed_models": None})
    assert status == 200 and body["api_key"]["allowed_models"] is None
    assert body["api_key"]["tags"] == ["batch"] and body["api_key"]["name"] == "new"
    await _chat(gw, key)
    status, listed = await _admin(gw, "GET", "/admin/keys")
    [row] = [k for k in listed["api_keys"] if k["id"] == key_id]
    assert (row["name"], row["allowed_models"], row["tags"]) == ("new", None, ["batch"])


async def test_limits_and_expiry_change_in_place(gw: Running) -> None:
    key, key_id = await _new_key(gw)
    status, _ = await _admin(
        gw, "PATCH", f"/admin/keys/{key_id}", {"settings": {"limits": {"rpm": 1}}}
    )
    assert status == 200
    await _chat(gw, key)
    with pytest.raises(openai.RateLimitError):
        await _chat(gw, key)
    status, body = await _admin(gw, "PATCH", f"/admin/keys/{key_id}", {"settings": None})
    assert status == 200 and body["api_key"]["settings"] == {}
    await _chat(gw, key)

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    status, body = await _admin(gw, "PATCH", f"/admin/keys/{key_id}", {"expires_at": past})
    assert status == 200 and body["api_key"]["expires_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        await _chat(gw, key)
    status, body = await _admin(gw, "PATCH", f"/admin/keys/{key_id}", {"expires_at": None})
    assert status == 200 and body["api_key"]["expires_at"] is None
    await _chat(gw, key)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"settings": {"limits": {"rpm": "x"}}}, 400, "settings.limits.rpm"),
        ({"settings": 5}, 400, "settings"),
        ({"allowed_models": "gpt-4o-mini"}, 400, "allowed_models"),
        ({"expires_at": "tomorrow"}, 400, "expires_at"),
        ({"name": "n" * 256}, 400, "name"),
        ({"customer": "other"}, 400, "customer"),
        ({"key_hash": "x"}, 400, "key_hash"),
    ],
)
async def test_bad_changes_are_refused_and_change_nothing(
    gw: Running, body: dict[str, Any], status: int, param: str
) -> None:
    key, key_id = await _new_key(gw, name="kept", settings={"limits": {"rpm": 100}})
    got, reply = await _admin(gw, "PATCH", f"/admin/keys/{key_id}", body)
    assert (got, reply["error"]["param"]) == (status, param), reply
    _, listed = await _admin(gw, "GET", "/admin/keys")
    [row] = [k for k in listed["api_keys"] if k["id"] == key_id]
    assert row["name"] == "kept" and row["settings"] == {"limits": {"rpm": 100}}
    await _chat(gw, key)


async def test_unknown_and_revoked_keys(gw: Running) -> None:
    status, reply = await _admin(gw, "PATCH", "/admin/keys/nope", {"name": "x"})
    assert (status, reply["error"]["code"]) == (404, "key_not_found")
    _, key_id = await _new_key(gw)
    assert (await _admin(gw, "DELETE", f"/admin/keys/{key_id}"))[0] == 200
    status, reply = await _admin(gw, "PATCH", f"/admin/keys/{key_id}", {"name": "x"})
    assert (status, reply["error"]["code"]) == (409, "key_revoked")
    async with (
        aiohttp.ClientSession() as s,
        s.patch(f"{gw.url}/admin/keys/{key_id}", json={"name": "x"}) as r,
    ):
        assert r.status == 401


async def test_a_subscription_of_another_customer_is_refused(gw: Running) -> None:
    status, _ = await _admin(gw, "POST", "/admin/customers", {"external_id": "globex"})
    assert status == 201
    lago = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession(headers=lago) as s:
        plan = {"plan": {"name": "P", "code": "p", "interval": "monthly", "amount_cents": 0,
                         "amount_currency": "USD", "charges": []}}  # fmt: skip
        async with s.post(f"{gw.url}/api/v1/plans", json=plan) as r:
            assert r.status == 200, await r.text()
        sub = {"subscription": {"external_customer_id": "globex", "plan_code": "p",
                                "external_id": "sub_globex"}}  # fmt: skip
        async with s.post(f"{gw.url}/api/v1/subscriptions", json=sub) as r:
            assert r.status == 200, await r.text()
    _, key_id = await _new_key(gw)
    status, reply = await _admin(
        gw, "PATCH", f"/admin/keys/{key_id}", {"external_subscription_id": "sub_globex"}
    )
    assert (status, reply["error"]["code"]) == (400, "subscription_of_another_customer")


async def test_stored_settings_that_cannot_be_used_are_a_clear_refusal_until_corrected(
    gw: Running,
) -> None:
    key, key_id = await _new_key(gw)
    async with gw.services.engine.begin() as conn:  # as a key stored by an older version
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(settings={"limits": {"rpm": "sixty"}})
        )
    gw.services.keys.invalidate()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await _chat(gw, key)
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "invalid_key_settings"
    assert "settings.limits.rpm" in error["message"] and key_id in error["message"]
    status, _ = await _admin(
        gw, "PATCH", f"/admin/keys/{key_id}", {"settings": {"limits": {"rpm": 60}}}
    )
    assert status == 200
    await _chat(gw, key)


def _cli(args: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    parsed: dict[str, Any] = orjson.loads(out.getvalue())
    return parsed


async def test_the_command_line_creates_and_updates_keys(gw: Running) -> None:
    db = ["--database-url", gw.settings.database_url]
    made = await asyncio.to_thread(
        _cli,
        ["keys", "create", "--customer", "acme", "--models", "gpt-4o-mini",
         "--settings", '{"limits": {"rpm": 50}}', *db],
    )  # fmt: skip
    key, key_id = made["key"], made["api_key"]["id"]
    assert made["api_key"]["settings"] == {"limits": {"rpm": 50}}
    changed = await asyncio.to_thread(
        _cli,
        ["keys", "update", key_id, "--any-model", "--tags", "a,b",
         "--settings", '{"max_price": "0.5"}', "--name", "renamed", *db],
    )  # fmt: skip
    row = changed["api_key"]
    assert row["allowed_models"] is None and row["tags"] == ["a", "b"]
    assert (row["settings"], row["name"]) == ({"max_price": "0.5"}, "renamed")
    await asyncio.sleep(1.1)  # another process: seen within the revocation TTL
    await _chat(gw, key, "claude-sonnet-4")
    for settings in ("[1]", '{"cache": "yes"}'):
        refused = await asyncio.to_thread(
            _cli_fails, ["keys", "update", key_id, "--settings", settings, *db]
        )
        assert "settings" in refused


def _cli_fails(args: list[str]) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(args) != 0
    return err.getvalue()
