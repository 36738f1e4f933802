"""Lago's rules for webhook endpoints, through the official client: one endpoint per URL (422
`webhook_url: value_already_exist`, on create and update, also when creates race), and
`event_types` only of types that exist (422 `Contains invalid types: [...]`, `Must be an
array`), read as Lago reads them. faregate accepted both a second endpoint for a URL and any
type name. Migration 0019 merges endpoints already sharing a URL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models.webhook_endpoint import WebhookEndpoint
from sqlalchemy import JSON, DateTime, bindparam, text

from faregate.store.db import create_engine, migrate
from tests.conftest import create_pg_database, drop_pg_database
from tests.webhooks import test_webhooks

db_url = test_webhooks.db_url  # a migrated SQLite or PostgreSQL database (fixtures)
server = test_webhooks.server

URL = "https://hooks.example.com/lago"


def _refused(details: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": details,
    }


def _client(server: Any) -> Client:
    _, base = server
    return Client(api_key=test_webhooks.ADMIN_KEY, api_url=base + "/")


def _endpoint(url: str = URL, types: Any = None) -> WebhookEndpoint:
    return WebhookEndpoint(webhook_url=url, signature_algo="hmac", event_types=types)


async def _refusal(call: Any, *args: Any) -> Any:
    with pytest.raises(LagoApiError) as raised:
        await asyncio.to_thread(call, *args)
    assert raised.value.status_code == 422
    return raised.value.response


async def test_a_second_endpoint_for_a_url_is_refused(server: Any) -> None:
    endpoints = _client(server).webhook_endpoints
    first = await asyncio.to_thread(endpoints.create, _endpoint())
    taken = _refused({"webhook_url": ["value_already_exist"]})
    assert await _refusal(endpoints.create, _endpoint(types=["invoice.created"])) == taken
    other = await asyncio.to_thread(endpoints.create, _endpoint(URL + "/other"))
    assert await _refusal(endpoints.update, _endpoint(), other.lago_id) == taken
    # Its own URL again is no conflict; once deleted, the URL may be registered again.
    same = await asyncio.to_thread(endpoints.update, _endpoint(), first.lago_id)
    assert same.webhook_url == URL
    await asyncio.to_thread(endpoints.destroy, first.lago_id)
    again = await asyncio.to_thread(endpoints.create, _endpoint())
    listed = await asyncio.to_thread(endpoints.find_all)
    assert sorted(e.lago_id for e in listed["webhook_endpoints"]) == sorted(
        [other.lago_id, again.lago_id]
    )


async def test_racing_creates_of_one_url_make_one_endpoint(server: Any) -> None:
    _, base = server
    headers = {"Authorization": f"Bearer {test_webhooks.ADMIN_KEY}"}
    body = {"webhook_endpoint": {"webhook_url": URL, "signature_algo": "hmac"}}
    async with httpx.AsyncClient(headers=headers) as http:
        answers = await asyncio.gather(
            *(http.post(f"{base}/api/v1/webhook_endpoints", json=body) for _ in range(8))
        )
        listed = (await http.get(f"{base}/api/v1/webhook_endpoints")).json()
    assert sorted(a.status_code for a in answers) == [200] + [422] * 7
    taken = _refused({"webhook_url": ["value_already_exist"]})
    assert all(a.json() == taken for a in answers if a.status_code == 422)
    assert [e["webhook_url"] for e in listed["webhook_endpoints"]] == [URL]


async def test_event_types_must_be_types_that_exist(server: Any) -> None:
    endpoints = _client(server).webhook_endpoints
    wrong = _endpoint(types=["invoice.created", "wrong.type", "Invoice.Nope"])
    assert await _refusal(endpoints.create, wrong) == _refused(
        {"event_types": ['Contains invalid types: ["wrong.type", "invoice.nope"]']}
    )
    made = await asyncio.to_thread(endpoints.create, _endpoint(types=["wallet.created"]))
    updated = _endpoint(types=["wallet.created", "wallet.exploded"])
    assert await _refusal(endpoints.update, updated, made.lago_id) == _refused(
        {"event_types": ['Contains invalid types: ["wallet.exploded"]']}
    )
    _, base = server
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {test_webhooks.ADMIN_KEY}"}
    ) as http:
        not_a_list = await http.post(
            f"{base}/api/v1/webhook_endpoints",
            json={"webhook_endpoint": {"webhook_url": URL + "/x", "event_types": "wrong"}},
        )
    assert not_a_list.status_code == 422
    assert not_a_list.json() == _refused({"event_types": ["Must be an array"]})
    listed = await asyncio.to_thread(endpoints.find_all)
    assert [e.event_types for e in listed["webhook_endpoints"]] == [["wallet.created"]]


async def test_event_types_are_read_as_lago_reads_them(server: Any) -> None:
    endpoints = _client(server).webhook_endpoints
    tidy = await asyncio.to_thread(
        endpoints.create,
        _endpoint(types=[" Invoice.Created ", "invoice.created", "", "wallet.updated"]),
    )
    assert tidy.event_types == ["invoice.created", "wallet.updated"]
    every = await asyncio.to_thread(endpoints.create, _endpoint(URL + "/all", ["*"]))
    assert every.event_types is None
    # A type only faregate sends may be subscribed to as well.
    own = await asyncio.to_thread(endpoints.create, _endpoint(URL + "/own", ["invoice.finalized"]))
    assert own.event_types == ["invoice.finalized"]


_ENDPOINT = text(
    "INSERT INTO webhook_endpoints (id, webhook_url, signature_algo, event_types, created_at)"
    " VALUES (:id, :url, 'hmac', :types, :at)"
).bindparams(
    bindparam("types", type_=JSON(none_as_null=True)),
    bindparam("at", type_=DateTime(timezone=True)),
)
_DELIVERY = text(
    "INSERT INTO webhooks (id, endpoint_id, webhook_url, webhook_type, object_type, payload,"
    " status, attempts, next_attempt_at, created_at) VALUES (:id, :endpoint, :url,"
    " 'invoice.created', 'invoice', '{}', 'pending', 0, 0, :at)"
).bindparams(bindparam("at", type_=DateTime(timezone=True)))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_endpoints_stored_with_one_url_are_merged_into_the_oldest(
    backend: str, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    if backend == "postgres":
        url = await create_pg_database()
    try:
        await asyncio.to_thread(migrate, url, "0003_webhooks")
        engine = create_engine(url)
        async with engine.begin() as conn:
            for i, (endpoint_url, types) in enumerate(
                [
                    ("https://a", ["invoice.created"]),
                    ("https://a", ["wallet.created", "invoice.created"]),
                    ("https://b", ["invoice.created"]),
                    ("https://b", None),  # every type
                    ("https://c", ["alert.triggered"]),
                ]
            ):
                at = datetime(2026, 1, i + 1, tzinfo=UTC)
                values = {"id": f"e{i}", "url": endpoint_url, "types": types, "at": at}
                await conn.execute(_ENDPOINT, values)
            await conn.execute(
                _DELIVERY, {"id": "d1", "endpoint": "e1", "url": "https://a", "at": at}
            )
        await engine.dispose()
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id, event_types FROM webhook_endpoints ORDER BY id")
            )
            found = {r[0]: r[1] for r in rows}
            delivery = await conn.scalar(text("SELECT endpoint_id FROM webhooks WHERE id = 'd1'"))
        await engine.dispose()
        found = {k: json.loads(v) if isinstance(v, str) else v for k, v in found.items()}
        assert found == {
            "e0": ["invoice.created", "wallet.created"],
            "e2": None,
            "e4": ["alert.triggered"],
        }
        assert delivery == "e0"
    finally:
        if backend == "postgres":
            await drop_pg_database(url)
