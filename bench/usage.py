"""Current usage of one subscription with 10 million events, on PostgreSQL: latency of
`GET /api/v1/customers/{id}/current_usage` (read from hourly rollups), and a raw scan beside it.

Loads N events (default 10,000,000), spread over the 27 days so far of its current monthly
period, for one subscription on a Mistral-style plan (`tokens` =
sum of `tokens` filtered by model x type, 6 models, plus `requests` = count) into a PostgreSQL
database kept between runs (`faregate_bench_usage`, never in the repository): events with
binary COPY, and their hourly rollups computed with faregate's own rollup code. Then starts
`faregate serve` on it, checks the reported units against what was loaded, and times N calls
of current usage from one keep-alive client. The comparison point is one raw aggregation of
the same events (what a scan-based engine runs, per charge filter or grouped). Writes
bench/results/usage-DATE.md/.json.

    python bench/usage.py                    # load once (several minutes), then measure
    python bench/usage.py --calls 2000       # reuses the loaded database
    python bench/usage.py --reload           # drop and load again
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import asyncpg
import orjson
from benchlib import machine, procs
from benchlib.faregate_setup import faregate_exe, psql

from faregate.billing import repository as repo
from faregate.metering import rollups
from faregate.store.db import create_engine, migrate

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
DATABASE = "faregate_bench_usage"
URL = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DATABASE}"
CUSTOMER, SUBSCRIPTION = "usage-customer", "usage-subscription"
ADMIN_KEY = "fg_admin_bench_usage"
MODELS = {  # per-1M-token input / output prices (USD)
    "open-mistral-7b": ("0.25", "0.25"),
    "open-mixtral-8x7b": ("0.7", "0.7"),
    "open-mixtral-8x22b": ("2", "6"),
    "mistral-small": ("1", "3"),
    "mistral-medium": ("2.7", "8.1"),
    "mistral-large": ("4", "12"),
}
CHUNK = 200_000
CONFIG = """\
server: {host: 127.0.0.1}
providers:
  none: {wire: openai, base_url: "http://127.0.0.1:9/v1", api_key: k}
models:
  - {name: m, deployments: [{provider: none, model: m}]}
billing: {default_metrics: false, run_interval: 0}
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--calls", type=int, default=1000, help="current usage calls timed")
    p.add_argument("--reload", action="store_true", help="drop the database and load again")
    return p.parse_args(argv)


def period_start(now: dt.datetime) -> dt.datetime:
    """The start of a monthly anniversary period 27 days old: whatever the calendar day, the
    current period then holds four weeks of hourly rollups (a calendar month read on its 2nd
    would hold one day's), close to the most a monthly period can hold."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=27)


def metric_definitions() -> list[dict[str, Any]]:
    return [
        {
            "code": "tokens",
            "name": "Tokens",
            "aggregation_type": "sum_agg",
            "field_name": "tokens",
            "recurring": False,
            "filters": [
                {"key": "model", "values": sorted(MODELS)},
                {"key": "type", "values": ["input", "output"]},
            ],
        },
        {
            "code": "requests",
            "name": "Requests",
            "aggregation_type": "count_agg",
            "recurring": False,
            "filters": [],
        },
    ]


def plan_definition() -> dict[str, Any]:
    filters = [
        {
            "values": {"model": [model], "type": [kind]},
            "properties": {"amount": str(Decimal(price) / 1_000_000)},
            "invoice_display_name": f"{model} {kind}",
        }
        for model, prices in MODELS.items()
        for kind, price in zip(("input", "output"), prices, strict=True)
    ]
    return {
        "code": "mistral",
        "name": "Mistral per 1M tokens",
        "interval": "monthly",
        "amount_cents": 0,
        "amount_currency": "USD",
        "pay_in_advance": False,
        "charges": [
            {
                "code": "tokens",
                "billable_metric_code": "tokens",
                "charge_model": "standard",
                "properties": {"amount": "0"},
                "filters": filters,
                "min_amount_cents": 0,
                "pay_in_advance": False,
            },
            {
                "code": "requests",
                "billable_metric_code": "requests",
                "charge_model": "standard",
                "properties": {"amount": "0"},
                "filters": [],
                "min_amount_cents": 0,
                "pay_in_advance": False,
            },
        ],
    }


async def catalog(start: dt.datetime) -> None:
    from faregate.auth import repository as customers

    engine = create_engine(URL)
    async with engine.begin() as conn:
        customer = await customers.insert_customer(conn, {"external_id": CUSTOMER})
        for definition in metric_definitions():
            await repo.insert_metric(conn, definition)
        await repo.insert_plan(conn, plan_definition())
        await repo.insert_subscription(
            conn,
            {
                "external_id": SUBSCRIPTION,
                "external_customer_id": CUSTOMER,
                "customer_id": customer["id"],
                "plan_code": "mistral",
                "status": "active",
                "billing_time": "anniversary",
                "subscription_at": start,
                "started_at": start,
            },
        )
    await engine.dispose()


async def load(n: int, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """COPY n events spread over [start, end) and write their rollups; returns what was loaded
    per (model, type), to check the endpoint's figures against."""
    from faregate.billing.metrics import BillableMetric

    specs = {
        d["code"]: rollups.MetricSpec.of(BillableMetric.from_dict(d)) for d in metric_definitions()
    }
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=DATABASE)
    rng = random.Random(42)
    span = (end - start).total_seconds()
    cells: dict[rollups.RollupKey, rollups.Cell] = {}
    expected: dict[str, int] = {"requests": 0}
    columns = (
        "transaction_id",
        "external_subscription_id",
        "external_customer_id",
        "code",
        "timestamp",
        "properties",
        "source",
        "created_at",
    )
    models = sorted(MODELS)
    started = time.monotonic()
    copy_seconds = 0.0
    for first in range(0, n, CHUNK):
        rows, records = [], []
        now = dt.datetime.now(dt.UTC)
        for i in range(first, min(n, first + CHUNK)):
            ts = start + dt.timedelta(seconds=span * i / n)
            if i % 5 == 0:
                props: dict[str, Any] = {"model": models[i % 6]}
                code = "requests"
                expected["requests"] += 1
            else:
                tokens = rng.randint(1, 4000)
                kind = "input" if i % 2 else "output"
                props = {"model": models[rng.randrange(6)], "type": kind, "tokens": tokens}
                code = "tokens"
                key = f"{props['model']}/{kind}"
                expected[key] = expected.get(key, 0) + tokens
            rows.append(
                {
                    "external_subscription_id": SUBSCRIPTION,
                    "code": code,
                    "timestamp": ts,
                    "properties": props,
                }
            )
            records.append(
                (
                    f"ev-{i}",
                    SUBSCRIPTION,
                    CUSTOMER,
                    code,
                    ts,
                    orjson.dumps(props).decode(),
                    "api",
                    now,
                )
            )
        rollups.accumulate(cells, specs, rows)
        t = time.monotonic()
        await conn.copy_records_to_table("events", records=records, columns=columns)
        copy_seconds += time.monotonic() - t
        print(f"  {min(n, first + CHUNK):,} events loaded", flush=True)
    await conn.close()
    engine = create_engine(URL)
    async with engine.begin() as sa:
        await rollups.apply(sa, cells)
    await engine.dispose()
    return {
        "events": n,
        "rollup_rows": len(cells),
        "expected": expected,
        "load_seconds": round(time.monotonic() - started, 1),
        "copy_rows_per_s": round(n / copy_seconds),
    }


async def time_calls(base: str, calls: int) -> tuple[list[float], dict[str, Any]]:
    url = (
        f"{base}/api/v1/customers/{CUSTOMER}/current_usage?external_subscription_id={SUBSCRIPTION}"
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    timings = []
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(calls + 20):
            t = time.perf_counter()
            async with session.get(url, headers=headers) as r:
                raw = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"current_usage answered {r.status}: {raw[:300]!r}")
            if i >= 20:  # warm-up calls are not counted
                timings.append((time.perf_counter() - t) * 1000)
            body = orjson.loads(raw)
    return timings, body


async def raw_scan(start: dt.datetime) -> float:
    """One grouped raw aggregation of the period's token events (milliseconds, best of 3)."""
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=DATABASE)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        await conn.fetch(
            "SELECT properties->>'model', properties->>'type', "
            "sum((properties->>'tokens')::numeric), count(*) FROM events "
            "WHERE external_subscription_id = $1 AND code = 'tokens' AND timestamp >= $2 "
            "GROUP BY 1, 2",
            SUBSCRIPTION,
            start,
        )
        best = min(best, (time.perf_counter() - t) * 1000)
    await conn.close()
    return best


def check(body: dict[str, Any], expected: dict[str, int]) -> list[str]:
    problems = []
    charges = {c["charge"]["code"]: c for c in body["customer_usage"]["charges_usage"]}
    if int(Decimal(charges["requests"]["units"])) != expected["requests"]:
        problems.append(f"requests: {charges['requests']['units']} != {expected['requests']}")
    for f in charges["tokens"]["filters"]:
        if not f["values"]:
            continue
        key = f"{f['values']['model'][0]}/{f['values']['type'][0]}"
        if int(Decimal(f["units"])) != expected.get(key, 0):
            problems.append(f"{key}: {f['units']} != {expected.get(key, 0)}")
    return problems


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    state = WORK / "usage-load.json"
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") == "1"
    if exists and not args.reload and state.exists():
        loaded = orjson.loads(state.read_bytes())
        if (
            loaded["events"] == args.events
            and loaded["month"] == period_start(dt.datetime.now(dt.UTC)).isoformat()
        ):
            print(f"reusing {DATABASE} ({loaded['events']:,} events)", flush=True)
            return dict(loaded)
    psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{DATABASE}"')
    migrate(URL)
    now = dt.datetime.now(dt.UTC)
    start, end = period_start(now), now - dt.timedelta(minutes=1)
    asyncio.run(catalog(start))
    print(f"loading {args.events:,} events into {DATABASE}", flush=True)
    loaded = asyncio.run(load(args.events, start, end))
    psql("VACUUM ANALYZE", DATABASE)
    loaded["month"] = start.isoformat()
    loaded["database_size"] = psql(f"SELECT pg_size_pretty(pg_database_size('{DATABASE}'))")
    state.write_bytes(orjson.dumps(loaded))
    return loaded


def markdown(date: str, meta: dict[str, Any], loaded: dict[str, Any], r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"# Current usage with {loaded['events']:,} events, {date}",
            "",
            f"Machine: {meta['machine']['nproc']} vCPU, {meta['machine']['cpu']}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
            + ".",
            "",
            f"One subscription on PostgreSQL with {loaded['events']:,} events in its current period "
            f"(a monthly anniversary period started {loaded['month'][:10]}, four weeks of hours) "
            f"(4 in 5 `tokens` events over 6 models x input/output, 1 in 5 `requests`), a "
            "Mistral-style plan (12 charge filters plus a count charge). "
            f"Database {loaded.get('database_size', '?')}; {loaded['rollup_rows']:,} hourly rollup "
            f"rows. Loaded with binary COPY at {loaded['copy_rows_per_s']:,} rows/s "
            f"({loaded['load_seconds']:,} s including generating the events and their rollups).",
            "",
            f"`GET /api/v1/customers/{{id}}/current_usage`, {r['calls']:,} sequential calls from "
            "one keep-alive client after 20 warm-up calls, faregate on its own core:",
            "",
            "| p50 | p90 | p99 | max | mean |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {r['p50_ms']:.1f} ms | {r['p90_ms']:.1f} ms | **{r['p99_ms']:.1f} ms** "
            f"| {r['max_ms']:.1f} ms | {r['mean_ms']:.1f} ms |",
            "",
            f"Load average at the end: {meta['load']}.",
            "",
            f"Every call's units matched the loaded events: {'yes' if not r['problems'] else 'NO'}"
            + ("" if not r["problems"] else f" ({'; '.join(r['problems'][:5])})")
            + ".",
            "",
            f"Comparison: one raw scan grouping the period's `tokens` events by model and type "
            f"(the work a scan-based engine repeats per read; Lago runs one such query per charge "
            f"filter) took **{r['raw_scan_ms']:,.0f} ms** (best of 3), "
            f"{r['raw_scan_ms'] / r['p50_ms']:,.0f}x the p50 above.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    loaded = prepare(args)
    config = WORK / "usage.yaml"
    config.write_text(CONFIG)
    port = procs.free_port()
    env = {
        "FAREGATE_DATABASE_URL": URL,
        "FAREGATE_ADMIN_KEY": ADMIN_KEY,
        "FAREGATE_DATA_DIR": str(WORK / "usage-data"),
        "FAREGATE_LOG_LEVEL": "warning",
    }
    server = procs.start(
        "faregate-usage",
        [faregate_exe(), "serve", "--config", str(config), "--port", str(port)],
        WORK / "logs" / "faregate-usage.log",
        env=env,
        cpus=[procs.NCPU - 1],
    )
    try:
        base = f"http://127.0.0.1:{port}"
        procs.wait_http(base + "/healthz", server)
        timings, body = asyncio.run(time_calls(base, args.calls))
    finally:
        server.stop()
    start = dt.datetime.fromisoformat(loaded["month"])
    result = {
        "calls": len(timings),
        "p50_ms": percentile(timings, 0.50),
        "p90_ms": percentile(timings, 0.90),
        "p99_ms": percentile(timings, 0.99),
        "max_ms": max(timings),
        "mean_ms": statistics.fmean(timings),
        "raw_scan_ms": asyncio.run(raw_scan(start)),
        "problems": check(body, loaded["expected"]),
    }
    date = dt.date.today().isoformat()
    meta = {
        "date": date,
        "machine": machine.machine(),
        "versions": machine.versions(None),
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    stem = RESULTS / f"usage-{date}"
    Path(f"{stem}.json").write_bytes(
        orjson.dumps(
            {
                "meta": meta,
                "loaded": {k: v for k, v in loaded.items() if k != "expected"},
                "result": result,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    text = markdown(date, meta, loaded, result)
    Path(f"{stem}.md").write_text(text)
    print(text)
    return 0 if not result["problems"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
