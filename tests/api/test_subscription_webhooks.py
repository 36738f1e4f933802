"""Lago's `subscription.terminated` webhook: sent once when a subscription is terminated
(`DELETE`, its `ending_at` passing, its customer or plan deleted), also for a pending one
canceled (status `canceled`), as Lago's Subscriptions::TerminateService sends it; of
concurrent terminations only the one that changes the row sends it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from lago_python_client.models import Subscription

from faregate.api.state import SERVICES
from faregate.billing import repository as repo
from tests.api.test_invoices_api import Server, server, subscribe

__all__ = ["server"]  # the fixture


async def _terminated(s: Server, count: int) -> list[dict[str, Any]]:
    """The `subscription.terminated` bodies, once `count` came and no more arrived."""
    async with asyncio.timeout(10):
        while len(s.receiver.of_type("subscription.terminated")) < count:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    sent = s.receiver.of_type("subscription.terminated")
    assert all(d.json["object_type"] == "subscription" for d in sent)
    return [d.json["subscription"] for d in sent]


async def _later(s: Server, external_id: str) -> None:
    at = datetime.now(UTC) + timedelta(days=3)
    await s.call(
        s.client.subscriptions.create,
        Subscription(
            external_customer_id="acme",
            plan_code="pro",
            external_id=external_id,
            subscription_at=at.isoformat(),
        ),
    )


async def test_terminating_sends_subscription_terminated_once(server: Server) -> None:
    await subscribe(server)  # sub_1, active
    await _later(server, "sub_later")  # pending
    for external_id in ("sub_1", "sub_1", "sub_later", "sub_later"):  # the second: no-ops
        await server.call(server.client.subscriptions.destroy, external_id)
    ended = await _terminated(server, 2)
    assert [(s["external_id"], s["status"]) for s in ended] == [
        ("sub_1", "terminated"),
        ("sub_later", "canceled"),
    ]
    assert ended[0]["terminated_at"] is not None and ended[1]["canceled_at"] is not None


async def test_a_subscription_reaching_its_ending_at_is_announced_by_one_billing_run(
    server: Server,
) -> None:
    await subscribe(server)
    # Far enough ahead that the PUT still sees it in the future on a loaded machine (with one
    # second, a suite run on two busy cores once answered 422 `invalid_date`).
    ending = datetime.now(UTC) + timedelta(seconds=3)
    put = await server.http(
        "PUT",
        "/api/v1/subscriptions/sub_1",
        json={"subscription": {"ending_at": ending.isoformat()}},
    )
    assert put.status_code == 200, put.text
    await asyncio.sleep(max(0.0, (ending - datetime.now(UTC)).total_seconds()) + 0.1)
    await asyncio.gather(*(server.http("POST", "/api/v1/billing_runs") for _ in range(3)))
    [ended] = await _terminated(server, 1)
    assert (ended["external_id"], ended["status"]) == ("sub_1", "terminated")
    assert datetime.fromisoformat(ended["terminated_at"]) == ending


async def test_deleting_a_customer_or_a_plan_announces_each_subscription_it_ends(
    server: Server,
) -> None:
    await subscribe(server)
    await _later(server, "sub_later")
    deleted = await server.http("DELETE", "/api/v1/customers/acme")
    assert deleted.status_code == 200, deleted.text
    ended = await _terminated(server, 2)
    assert sorted((s["external_id"], s["status"]) for s in ended) == [
        ("sub_1", "terminated"),
        ("sub_later", "canceled"),
    ]


async def test_deleting_ends_every_subscription_however_many_batches_they_take(
    server: Server, monkeypatch: Any
) -> None:
    """Subscriptions are ended a batch at a time: more than a batch, and an exact multiple
    of one, are all ended and each announced once."""
    monkeypatch.setattr(repo, "TERMINATION_BATCH", 2)
    await subscribe(server)  # sub_1
    for n in range(2, 6):  # 5 in all: two full batches and a last one
        await _later(server, f"sub_{n}")
    deleted = await server.http("DELETE", "/api/v1/customers/acme")
    assert deleted.status_code == 200, deleted.text
    ended = await _terminated(server, 5)
    assert sorted(s["external_id"] for s in ended) == [f"sub_{n}" for n in range(1, 6)]
    engine = server.runner.app[SERVICES].engine
    async with engine.connect() as conn:
        live, _ = await repo.list_subscriptions(conn, "acme", statuses=("active", "pending"))
    assert live == []


async def test_deleting_a_plan_ends_an_exact_multiple_of_the_batch(
    server: Server, monkeypatch: Any
) -> None:
    monkeypatch.setattr(repo, "TERMINATION_BATCH", 2)
    await subscribe(server)
    for n in range(2, 5):  # 4 in all: the last batch is full, the next one empty
        await _later(server, f"sub_{n}")
    deleted = await server.http("DELETE", "/api/v1/plans/pro")
    assert deleted.status_code == 200, deleted.text
    ended = await _terminated(server, 4)
    assert sorted((s["external_id"], s["status"]) for s in ended) == [
        ("sub_1", "terminated"),
        ("sub_2", "canceled"),
        ("sub_3", "canceled"),
        ("sub_4", "canceled"),
    ]


async def test_of_two_terminations_of_one_row_only_the_first_changes_it(server: Server) -> None:
    """What two replicas do when both read the live row before either writes."""
    await subscribe(server)
    engine = server.runner.app[SERVICES].engine
    async with engine.connect() as conn:
        row = await repo.subscription_by_external_id(conn, "sub_1")
    assert row is not None
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        first = await repo.terminate_subscription(conn, row, now)
    async with engine.begin() as conn:
        second = await repo.terminate_subscription(conn, row, now + timedelta(seconds=5))
    assert first is not None and first["status"] == "terminated" and second is None
    async with engine.connect() as conn:
        stored = await repo.subscription_by_external_id(conn, "sub_1")
    assert stored is not None and stored["terminated_at"].replace(tzinfo=UTC) == now
