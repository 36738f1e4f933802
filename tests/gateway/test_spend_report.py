"""Spend attribution from the request records: API (JSON, CSV) and CLI, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from faregate.auth.principal import Principal
from faregate.auth.service import KeyService
from faregate.cli import main
from faregate.gateway.call import Call
from faregate.metering.spend import METRICS
from faregate.mockprovider.server import MockServer
from faregate.money import from_nanos, to_nanos
from tests.gateway.conftest import ADMIN_KEY, Running, start_gateway

CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def _chat(gw: Running, key: str, tags: str | None = None, model: str = "gpt-4o-mini") -> str:
    headers = {"Authorization": f"Bearer {key}"}
    if tags:
        headers["X-Faregate-Tags"] = tags
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions", json={**CHAT, "model": model}, headers=headers
        ) as r,
    ):
        assert r.status == 200, await r.text()
        return r.headers["x-faregate-cost"]


async def _spend(gw: Running, **params: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{gw.url}/api/v1/spend",
            params=params,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def _traffic(gw: Running) -> dict[tuple[str, str | None], Decimal]:
    design, _ = await KeyService(gw.services.engine, ADMIN_KEY).create_key(
        name="d", customer_external_id="acme", team="design", tags=["drafts"]
    )
    costs: dict[tuple[str, str | None], Decimal] = {}

    async def one(
        team: str, key: str, tags: str | None, tag_of: list[str | None], model: str = "gpt-4o-mini"
    ) -> None:
        cost = Decimal(await _chat(gw, key, tags, model))
        for tag in tag_of:
            costs[team, tag] = costs.get((team, tag), Decimal(0)) + cost

    await one("research", gw.key, None, [None])
    await one("research", gw.key, "search", ["search"])
    await one("research", gw.key, "search,chat", ["search", "chat"])
    await one("design", design, None, ["drafts"])
    await one("design", design, "search", ["drafts", "search"])
    await one("design", design, None, ["drafts"], "claude-sonnet-4")
    await gw.services.writer.flush()
    return costs


async def test_spend_by_team_and_tag_as_json_and_csv(gateway: Running) -> None:
    costs = await _traffic(gateway)
    status, _, body = await _spend(gateway, by="team,tag", format="json")
    assert status == 200
    report = orjson.loads(body)
    grouped = {(r["team"], r["tag"]): r for r in report["rows"]}
    for (team, tag), cost in costs.items():
        assert Decimal(grouped[team, tag]["cost"]) == cost
    assert grouped["research", "search"]["requests"] == 2
    assert grouped["design", "drafts"]["requests"] == 3
    assert report["totals"]["requests"] == 6

    status, ctype, text = await _spend(gateway, by="provider,model", format="csv")
    assert status == 200 and ctype.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    by = {(r["provider"], r["model"]): r for r in rows}
    assert int(by["openai", "gpt-4o-mini"]["requests"]) == 5
    assert int(by["anthropic", "claude-sonnet-4"]["requests"]) == 1
    assert sum(Decimal(r["cost"]) for r in rows) == Decimal(report["totals"]["cost"])

    status, _, body = await _spend(gateway, by="team", tag="search")
    filtered = {r["team"]: r["requests"] for r in orjson.loads(body)["rows"]}
    assert filtered == {"research": 2, "design": 1}

    status, _, body = await _spend(gateway, by="day,customer")
    days = orjson.loads(body)["rows"]
    assert [(r["day"], r["customer"], r["requests"]) for r in days] == [
        (datetime.now(UTC).date().isoformat(), "acme", 6)
    ]

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    status, _, body = await _spend(gateway, by="team", since=tomorrow, until=tomorrow)
    assert status == 200 and orjson.loads(body)["rows"] == []


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_spend_needs_the_admin_key_and_known_dimensions(gateway: Running) -> None:
    status, _, _ = await _spend(gateway, by="colour")
    assert status == 400
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            f"{gateway.url}/api/v1/spend", headers={"Authorization": f"Bearer {gateway.key}"}
        ) as r,
    ):
        assert r.status in (401, 403)


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_the_spend_command_exports_csv(gateway: Running, tmp_path: Path) -> None:
    await _traffic(gateway)
    out = tmp_path / "spend.csv"
    since = datetime.now(UTC).date().isoformat()
    argv = [
        "spend",
        "--database-url",
        gateway.settings.database_url,
        "--by",
        "team,tag",
        "--since",
        since,
        "--format",
        "csv",
        "-o",
        str(out),
    ]
    assert await asyncio.to_thread(main, argv) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {(r["team"], r["tag"]) for r in rows} >= {("research", "search"), ("design", "drafts")}
    assert list(rows[0]) == ["team", "tag", *METRICS]


def _worst_case_price(gw: Running, body: dict[str, Any]) -> Decimal:
    call = Call("x", Principal("k", "p"), "chat", body["model"], dict(body))
    call.group = gw.services.router.resolve(body["model"])
    gw.services.components["pricer"].estimate_call(call)
    assert call.est_price is not None and call.est_price > 0
    return call.est_price


async def _send(gw: Running, body: dict[str, Any], tag: str) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {gw.key}", "X-Faregate-Tags": tag}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        await r.read()
        return r.status, dict(r.headers)


@pytest.mark.parametrize(
    ("billing", "share"), [("free", Decimal(0)), ("share", Decimal("0.25"))], ids=["free", "share"]
)
async def test_moderation_blocks_and_cache_hits_report_what_they_saved(
    tmp_path: Path, mock: MockServer, billing: str, share: Decimal
) -> None:
    extra = {
        "moderation": {"policies": [{"id": "secrets", "keywords": ["launch codes"]}]},
        "cache": {"enabled": True, "hit_billing": billing, "share": str(share)},
    }
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, extra)
    blocked = {**CHAT, "max_tokens": 50, "messages": [{"role": "user", "content": "launch codes"}]}
    cached = {**CHAT, "temperature": 0}
    try:
        would_have_cost = _worst_case_price(gw, blocked)
        assert (await _send(gw, blocked, "blocked"))[0] == 400
        status, fresh = await _send(gw, cached, "cached")
        assert status == 200 and "x-faregate-cache" not in fresh
        status, hit = await _send(gw, cached, "cached")
        assert status == 200 and hit["x-faregate-cache"] == "hit"
        assert mock.stats.requests == 1  # neither the blocked prompt nor the hit went upstream
        await gw.services.writer.flush()
        fresh_price = Decimal(fresh["x-faregate-price"])
        hit_saving = from_nanos(to_nanos(fresh_price - fresh_price * share))  # as stored
        assert hit_saving > 0

        status, _, body = await _spend(gw, by="tag")
        assert status == 200
        report = orjson.loads(body)
        rows = {r["tag"]: r for r in report["rows"]}
        assert Decimal(rows["blocked"]["saved"]) == would_have_cost
        assert (rows["blocked"]["errors"], Decimal(rows["blocked"]["price"])) == (1, 0)
        assert Decimal(rows["cached"]["saved"]) == hit_saving
        assert rows["cached"]["cache_hits"] == 1
        hit_price = from_nanos(to_nanos(Decimal(hit["x-faregate-price"])))
        assert Decimal(rows["cached"]["price"]) == fresh_price + hit_price
        assert Decimal(report["totals"]["saved"]) == would_have_cost + hit_saving

        argv = ["spend", "--database-url", gw.settings.database_url, "--by", "tag"]
        out = tmp_path / "spend.csv"
        assert await asyncio.to_thread(main, [*argv, "--format", "csv", "-o", str(out)]) == 0
        by_tag = {r["tag"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
        assert Decimal(by_tag["blocked"]["saved"]) == would_have_cost
        assert Decimal(by_tag["cached"]["saved"]) == hit_saving
    finally:
        await gw.runner.cleanup()
