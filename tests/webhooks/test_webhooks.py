"""Webhooks: Lago's envelope and HMAC signature, retries with backoff, the delivery log, the
durable outbox across a restart, one delivery per row with two replicas on one database, and
the Lago v1 `webhook_endpoints` API driven by the official client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lago_python_client.client import Client
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models.webhook_endpoint import WebhookEndpoint

from faregate.app import start_app
from faregate.config import load_settings
from faregate.store.db import create_engine
from faregate.webhooks import Webhooks, WebhookSettings
from tests.conftest import create_pg_database, drop_pg_database, free_port, migrated
from tests.webhooks.receiver import Receiver

HMAC_KEY = "whsec_test_key"
ADMIN_KEY = "fg_admin_webhooks_test"
FAST = {"retry_base_seconds": 0.02, "retry_max_seconds": 0.1, "poll_seconds": 0.02}


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await migrated(url)
    yield url
    if postgres:
        await drop_pg_database(url)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


def _hooks(url: str, endpoint: str, **config: Any) -> Webhooks:
    settings = WebhookSettings.from_settings(
        load_settings(
            env={"FAREGATE_DATABASE_URL": url},
            overrides={
                "webhooks": {"hmac_key": HMAC_KEY, "endpoints": [endpoint], **FAST, **config}
            },
        )
    )
    return Webhooks(create_engine(url), settings)


async def _settled(hooks: Webhooks) -> list[dict[str, Any]]:
    """The delivery log once no row is waiting for its outcome to be recorded."""
    async with asyncio.timeout(10):
        while True:
            rows = await hooks.deliveries()
            if rows and all(r["status"] != "pending" for r in rows):
                return rows
            await asyncio.sleep(0.02)


async def _stop(hooks: Webhooks) -> None:
    await hooks.close()
    await hooks.engine.dispose()


async def test_envelope_and_signature_are_lagos(db_url: str, receiver: Receiver) -> None:
    hooks = _hooks(db_url, receiver.url, organization_id="org_1")
    await hooks.start()
    try:
        await hooks.emit("alert.triggered", "alert", {"code": "budget_80", "amount": "0.80"})
        [delivery] = await receiver.wait_for(1)
    finally:
        await _stop(hooks)
    assert delivery.json == {
        "webhook_type": "alert.triggered",
        "object_type": "alert",
        "organization_id": "org_1",
        "alert": {"code": "budget_80", "amount": "0.80"},
    }
    # Verified by hand, exactly as a receiver of Lago's webhooks does.
    expected = base64.b64encode(
        hmac.new(HMAC_KEY.encode(), delivery.body, hashlib.sha256).digest()
    ).decode()
    assert delivery.headers["X-Lago-Signature"] == expected
    assert delivery.headers["X-Lago-Signature-Algorithm"] == "hmac"
    assert delivery.signed_by(HMAC_KEY) and not delivery.signed_by("another key")


async def test_failed_attempts_are_retried_and_logged(db_url: str, receiver: Receiver) -> None:
    receiver.fail_next = 2
    hooks = _hooks(db_url, receiver.url)
    await hooks.start()
    try:
        await hooks.emit("invoice.created", "invoice", {"lago_id": "inv_1"})
        [row] = await _settled(hooks)
    finally:
        await _stop(hooks)
    assert len(receiver.deliveries) == 3
    assert len({d.unique_key for d in receiver.deliveries}) == 1  # one webhook, three attempts
    assert row["status"] == "succeeded" and row["attempts"] == 3
    assert row["last_http_status"] == 200 and row["delivered_at"] is not None


async def test_gives_up_after_max_attempts_and_can_be_retried(
    db_url: str, receiver: Receiver
) -> None:
    receiver.fail_next = 100
    hooks = _hooks(db_url, receiver.url, max_attempts=3)
    await hooks.start()
    try:
        await hooks.emit("event.error", "event_error", {"error": "invalid_code"})
        async with asyncio.timeout(10):
            while not await hooks.deliveries(status="failed"):
                await asyncio.sleep(0.02)
        [failed] = await hooks.deliveries(status="failed")
        assert failed["attempts"] == 3 and failed["last_error"] == "HTTP 500"
        assert len(receiver.deliveries) == 3

        receiver.fail_next = 0
        assert await hooks.retry([failed["id"]]) == 1
        await receiver.wait_for(1)
        [row] = await _settled(hooks)
    finally:
        await _stop(hooks)
    assert row["status"] == "succeeded"


def test_backoff_grows_exponentially_with_jitter() -> None:
    hooks = Webhooks(
        None, WebhookSettings(hmac_key="k", retry_base_seconds=2, retry_max_seconds=60)
    )  # type: ignore[arg-type]
    for attempts, base in ((1, 2), (2, 4), (3, 8), (4, 16), (10, 60)):
        waits = [hooks.backoff_seconds(attempts) for _ in range(50)]
        assert all(0.75 * base <= w <= 1.25 * base for w in waits)


async def test_the_outbox_survives_a_restart(db_url: str, receiver: Receiver) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    first = _hooks(db_url, down, retry_base_seconds=30)
    await first.start()
    await first.emit("wallet.depleted_ongoing_balance", "wallet", {"lago_id": "w_1"})
    async with asyncio.timeout(10):
        while not (rows := await first.deliveries()) or rows[0]["attempts"] == 0:
            await asyncio.sleep(0.02)
    await _stop(first)
    assert rows[0]["status"] == "pending" and "ClientConnectorError" in rows[0]["last_error"]

    # The receiver comes back at the same address; a new process delivers what was queued.
    second = _hooks(db_url, down)
    async with second.engine.begin() as conn:
        from faregate.store.tables.webhooks import webhooks

        await conn.execute(webhooks.update().values(webhook_url=receiver.url, next_attempt_at=0))
    await second.start()
    try:
        [delivery] = await receiver.wait_for(1)
    finally:
        await _stop(second)
    assert delivery.json["wallet"] == {"lago_id": "w_1"}


async def test_two_replicas_deliver_each_webhook_once(db_url: str, receiver: Receiver) -> None:
    a = _hooks(db_url, receiver.url)
    b = _hooks(db_url, receiver.url)
    # Queue with delivery stopped, then let both replicas race for the same rows.
    await asyncio.gather(*(a.emit("alert.triggered", "alert", {"n": n}) for n in range(40)))
    await asyncio.gather(a.start(), b.start())
    try:
        await receiver.wait_for(40)
        await asyncio.sleep(0.2)  # any duplicate would arrive within a few polls
    finally:
        await asyncio.gather(_stop(a), _stop(b))
    keys = [d.unique_key for d in receiver.deliveries]
    assert len(keys) == 40 and len(set(keys)) == 40
    assert sorted(d.json["alert"]["n"] for d in receiver.deliveries) == list(range(40))


async def test_endpoint_event_types_filter(db_url: str, receiver: Receiver) -> None:
    hooks = _hooks(db_url, receiver.url)
    hooks.config = WebhookSettings(
        hmac_key=HMAC_KEY,
        **FAST,
        endpoints=(
            type(hooks.config.endpoints[0])(
                url=receiver.url, event_types=frozenset({"invoice.created"})
            ),
        ),
    )
    await hooks.start()
    try:
        await hooks.emit("alert.triggered", "alert", {})
        await hooks.emit("invoice.created", "invoice", {})
        await receiver.wait_for(1)
        await asyncio.sleep(0.1)
    finally:
        await _stop(hooks)
    assert [d.json["webhook_type"] for d in receiver.deliveries] == ["invoice.created"]


async def test_a_slow_receiver_holds_up_no_other_delivery(db_url: str) -> None:
    """Deliveries were posted a claimed batch at a time, the next batch claimed only when
    the slowest post of the last one ended: a receiver answering in 3 s held every other
    webhook, of every endpoint, that long (a dead one, 8 attempts of 10 s)."""
    slow, fast = await Receiver(delay=3.0).start(), await Receiver().start()
    hooks = _hooks(db_url, slow.url)
    Endpoint = type(hooks.config.endpoints[0])
    hooks.config = WebhookSettings(
        hmac_key=HMAC_KEY, **FAST, endpoints=(Endpoint(url=slow.url), Endpoint(url=fast.url))
    )
    await hooks.start()
    try:
        await hooks.emit("event.error", "event_error", {"n": 1})
        await fast.wait_for(1)
        await asyncio.sleep(0.1)  # the slow receiver is still answering the first
        started = asyncio.get_running_loop().time()
        await hooks.emit("event.error", "event_error", {"n": 2})
        await fast.wait_for(2, timeout=1.5)
        assert asyncio.get_running_loop().time() - started < 1.5
        await slow.wait_for(2, timeout=10)
    finally:
        await _stop(hooks)
        await slow.close()
        await fast.close()


async def test_deliveries_to_a_deleted_endpoint_are_given_up(db_url: str) -> None:
    from sqlalchemy import delete

    from faregate.store.tables.webhooks import webhook_endpoints

    hooks = _hooks(db_url, f"http://127.0.0.1:{free_port()}/closed", max_attempts=50)
    hooks.config = WebhookSettings(hmac_key=HMAC_KEY, **FAST, max_attempts=50)
    async with hooks.engine.begin() as conn:
        await conn.execute(
            webhook_endpoints.insert().values(
                id="ep_1",
                webhook_url=f"http://127.0.0.1:{free_port()}/closed",
                signature_algo="hmac",
                created_at=datetime.now(UTC),
            )
        )
    await hooks.start()
    try:
        await hooks.emit("event.error", "event_error", {})
        async with asyncio.timeout(10):
            while not (rows := await hooks.deliveries()) or rows[0]["attempts"] < 2:
                await asyncio.sleep(0.02)
        async with hooks.engine.begin() as conn:
            await conn.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == "ep_1"))
        await hooks.reload_endpoints()
        [row] = await _settled(hooks)
    finally:
        await _stop(hooks)
    assert (row["status"], row["last_error"]) == ("failed", "the webhook endpoint was deleted")
    assert row["attempts"] < 50  # retried no more


# --- through a running server, with the official Lago client --------------------------


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    settings = load_settings(
        env={
            "FAREGATE_DATABASE_URL": db_url,
            "FAREGATE_ADMIN_KEY": ADMIN_KEY,
            "FAREGATE_DATA_DIR": str(tmp_path),
        },
        overrides={"webhooks": {"hmac_key": HMAC_KEY, **FAST}},
    )
    settings.port = free_port()
    runner = await start_app(settings)
    yield runner, f"http://127.0.0.1:{settings.port}"
    await runner.cleanup()


async def test_webhook_endpoints_api_with_the_lago_client(server: Any, receiver: Receiver) -> None:
    from faregate.api.state import SERVICES

    runner, base = server
    client = Client(api_key=ADMIN_KEY, api_url=base + "/")
    call = asyncio.to_thread
    created = await call(
        client.webhook_endpoints.create,
        WebhookEndpoint(
            webhook_url=receiver.url,
            signature_algo="hmac",
            name="ops",
            event_types=["alert.triggered"],
        ),
    )
    assert created.webhook_url == receiver.url and created.event_types == ["alert.triggered"]
    assert created.lago_organization_id == "faregate"
    listed = await call(client.webhook_endpoints.find_all)
    assert [e.lago_id for e in listed["webhook_endpoints"]] == [created.lago_id]

    hooks = runner.app[SERVICES].webhooks
    await hooks.emit("invoice.created", "invoice", {"lago_id": "i"})  # filtered out
    await hooks.emit("alert.triggered", "alert", {"code": "x"})
    [delivery] = await receiver.wait_for(1)
    assert delivery.json["webhook_type"] == "alert.triggered" and delivery.signed_by(HMAC_KEY)

    updated = await call(
        client.webhook_endpoints.update,
        WebhookEndpoint(webhook_url=receiver.url, event_types=[], name="all", signature_algo=None),
        created.lago_id,
    )
    assert updated.event_types is None and updated.name == "all"
    await hooks.emit("invoice.created", "invoice", {"lago_id": "i2"})
    await receiver.wait_for(2)
    await _settled(hooks)

    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
        log = (await http.get(f"{base}/api/v1/webhooks", params={"status": "succeeded"})).json()
        assert {w["webhook_type"] for w in log["webhooks"]} == {
            "alert.triggered",
            "invoice.created",
        }
        bad = await http.post(
            f"{base}/api/v1/webhook_endpoints",
            json={"webhook_endpoint": {"webhook_url": "ftp://x"}},
        )
        assert bad.status_code == 422
        assert bad.json()["error_details"] == {"webhook_url": ["url_is_invalid"]}
        jwt = await http.post(
            f"{base}/api/v1/webhook_endpoints",
            json={"webhook_endpoint": {"webhook_url": receiver.url, "signature_algo": "jwt"}},
        )
        assert jwt.status_code == 422
        anonymous = await http.get(
            f"{base}/api/v1/webhook_endpoints", headers={"Authorization": "Bearer nope"}
        )
        assert anonymous.status_code == 401

    deleted = await call(client.webhook_endpoints.destroy, created.lago_id)
    assert deleted.lago_id == created.lago_id
    with pytest.raises(LagoApiError) as missing:
        await call(client.webhook_endpoints.find, created.lago_id)
    assert missing.value.status_code == 404


async def test_cli_prints_the_key_and_the_delivery_log(
    db_url: str, receiver: Receiver, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    import orjson

    from faregate.cli import main

    hooks = _hooks(db_url, receiver.url)
    await hooks.start()
    try:
        await hooks.emit("alert.triggered", "alert", {"code": "c"})
        await _settled(hooks)
    finally:
        await _stop(hooks)
    monkeypatch.setenv("FAREGATE_DATABASE_URL", db_url)
    monkeypatch.setenv("FAREGATE_SECRET_KEY", "s3cret")
    assert await asyncio.to_thread(main, ["webhooks", "list", "--status", "succeeded"]) == 0
    listed = orjson.loads(capsys.readouterr().out)["webhooks"]
    assert [w["webhook_type"] for w in listed] == ["alert.triggered"]
    assert await asyncio.to_thread(main, ["webhooks", "hmac-key"]) == 0
    printed = capsys.readouterr().out.strip()
    assert len(printed) == 64 and "s3cret" not in printed  # derived one-way from the secret
