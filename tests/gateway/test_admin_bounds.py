"""The admin API refuses, with a 400 naming the field, what its columns cannot hold (on
PostgreSQL a longer name was the database's error, a 500; SQLite kept it), and a credit
limit outside what a wallet's balance holds."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.gateway.conftest import ADMIN_KEY, Running

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/customers", {"external_id": "c" * 256}, "external_id"),
        ("/admin/customers", {"external_id": "c", "name": "n" * 256}, "name"),
        ("/admin/customers", {"external_id": "c", "currency": "EURO"}, "currency"),
        ("/admin/customers", {"external_id": "c", "currency": "US"}, "currency"),  # was kept
        ("/admin/customers", {"external_id": "c", "timezone": "t" * 65}, "timezone"),
        ("/admin/customers", {"external_id": "c", "timezone": "Mars/Olympus"}, "timezone"),
        ("/admin/customers", {"external_id": "c", "credit_limit": "1e400"}, "credit_limit"),
        ("/admin/customers", {"external_id": "c", "credit_limit": "4611686019"}, "credit_limit"),
        ("/admin/customers", {"external_id": "c", "credit_limit": "-1"}, "credit_limit"),
        ("/admin/customers", {"external_id": "c", "credit_limit": "ten"}, "credit_limit"),
        ("/admin/teams", {"name": "t" * 256}, "name"),
    ],
)
async def test_a_value_its_column_cannot_hold_is_refused(
    gateway: Running, path: str, body: dict[str, Any], param: str
) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gateway.url}{path}", json=body, headers=ADMIN) as r:
            assert r.status == 400, await r.text()
            assert (await r.json())["error"]["param"] == param
        fits = {
            "external_id": "c" * 255,
            "name": "n" * 255,
            "timezone": "America/Argentina/ComodRivadavia",
            "credit_limit": "4611686018",
        }
        async with s.post(f"{gateway.url}/admin/customers", json=fits, headers=ADMIN) as r:
            assert r.status == 201, await r.text()


@pytest.mark.parametrize(
    ("settings", "param"),
    [
        ({"limits": 5}, "settings.limits"),
        ({"limits": {"rpm": "x"}}, "settings.limits.rpm"),
        ({"limits": {"tpm": -5}}, "settings.limits.tpm"),
        ({"limits": {"max_concurrent": 1.5}}, "settings.limits.max_concurrent"),
        ({"max_price": "abc"}, "settings.max_price"),
        ({"max_price": [1]}, "settings.max_price"),
        ({"max_price": "-1"}, "settings.max_price"),
        ({"max_price": "NaN"}, "settings.max_price"),
        ({"cache": "yes"}, "settings.cache"),
        ({"moderation": "strict"}, "settings.moderation"),
    ],
)
async def test_key_settings_its_requests_could_not_use_are_refused(
    gateway: Running, settings: dict[str, Any], param: str
) -> None:
    # Such a key used to be made, and every request with it was a 500.
    async with aiohttp.ClientSession(headers=ADMIN) as s:
        body = {"customer": "acme", "settings": settings}
        async with s.post(f"{gateway.url}/admin/keys", json=body) as r:
            assert r.status == 400, await r.text()
            assert (await r.json())["error"]["param"] == param
        usable = {"limits": {"rpm": 60, "max_concurrent": 2}, "max_price": "0.5", "cache": True}
        async with s.post(f"{gateway.url}/admin/keys", json={**body, "settings": usable}) as r:
            assert r.status == 201, await r.text()
            key = (await r.json())["key"]
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s,
        s.post(f"{gateway.url}/v1/chat/completions", json=chat) as r,
    ):
        assert r.status == 200, await r.text()
