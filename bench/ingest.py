"""Event ingestion throughput into PostgreSQL: faregate's batch endpoint, and COPY beside it.

POSTs Lago-shaped batches ({"events": [{transaction_id, external_subscription_id, code,
timestamp, properties}]}) of 100 to 1,000 events to POST /api/v1/events/batch with the
admin key, from a few concurrent clients, for a bounded time per batch size; then counts the
rows that landed. The comparison point is PostgreSQL's own COPY of the same rows into a
table shaped like `events`. If the endpoint answers 404 (not in this build) that part is
skipped with a message and only COPY is measured. Writes bench/results/ingest-DATE.md/.json.

    python bench/ingest.py                       # batches of 100 and 1,000, 10 s each
    python bench/ingest.py --batch-sizes 500 --seconds 5
    python bench/ingest.py --profile             # then one more run of the largest batch
                                                 # under py-spy: results/profile-ingest-DATE.*
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import orjson
from benchlib import machine, procs
from benchlib.faregate_setup import SUBSCRIPTION, FaregateInstance, explain

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
ENDPOINT = "/api/v1/events/batch"
CODE = "bench_tokens"
MAX_BATCHES = 20_000  # a hard bound on requests per batch size, whatever the time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="100,1000", help="events per request, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0, help="load per batch size")
    p.add_argument("--clients", type=int, default=4, help="concurrent requests in flight")
    p.add_argument("--copy-rows", type=int, default=200_000, help="rows for the COPY comparison")
    p.add_argument("--profile", action="store_true", help="also profile the server (py-spy)")
    args = p.parse_args(argv)
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    if any(not 1 <= b <= 10_000 for b in args.batch_sizes) or not 0 < args.seconds <= 600:
        p.error("batch sizes must be 1..10000 and --seconds 0..600")
    return args


def make_events(n: int, run: str, start: int) -> list[dict[str, Any]]:
    ts = int(time.time())
    return [
        {
            "transaction_id": f"{run}-{start + i}",
            "external_subscription_id": SUBSCRIPTION,
            "code": CODE,
            "timestamp": ts,
            "properties": {
                "model": "bench-fast",
                "input_tokens": 120 + i % 50,
                "output_tokens": 40 + i % 30,
                "kind": "chat",
            },
        }
        for i in range(n)
    ]


async def probe(session: aiohttp.ClientSession, url: str, key: str) -> tuple[int, str]:
    body = orjson.dumps({"events": make_events(1, "probe-" + uuid.uuid4().hex[:8], 0)})
    async with session.post(url, data=body, headers=_headers(key)) as r:
        return r.status, (await r.text())[:300]


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


# Bodies made before the clock starts, enough for this rate: the client then only sends
# bytes, so the load generator (on the core PostgreSQL also uses) does not set the pace.
PREPARED_EVENTS_PER_S = 100_000


async def load(url: str, key: str, batch: int, seconds: float, clients: int) -> dict[str, Any]:
    run = f"b{batch}-{uuid.uuid4().hex[:8]}"
    wanted = min(MAX_BATCHES, int(seconds * PREPARED_EVENTS_PER_S / batch) + clients)
    bodies = [orjson.dumps({"events": make_events(batch, run, i * batch)}) for i in range(wanted)]
    counter = iter(bodies)
    accepted = failed = 0
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    headers = _headers(key)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, failed
        for body in counter:
            if time.monotonic() >= deadline:
                return
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
                if 200 <= r.status < 300:
                    accepted += batch
                else:
                    failed += batch

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "batch": batch,
        "seconds": round(elapsed, 2),
        "events_sent": accepted + failed,
        "events_accepted": accepted,
        "events_failed": failed,
        "statuses": statuses,
        "events_per_s": round(accepted / elapsed, 1),
        "run": run,
    }


async def copy_point(database: str, rows: int) -> dict[str, Any]:
    """COPY the same shape of rows into a table like `events` (constraints and indexes too)."""
    import asyncpg

    conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database=database)
    try:
        has_events = await conn.fetchval("SELECT to_regclass('events') IS NOT NULL")
        await conn.execute("DROP TABLE IF EXISTS bench_copy_events")
        if has_events:
            await conn.execute("CREATE TABLE bench_copy_events (LIKE events INCLUDING ALL)")
        else:
            await conn.execute(
                "CREATE TABLE bench_copy_events (id bigserial PRIMARY KEY, transaction_id text "
                "NOT NULL, external_subscription_id text NOT NULL, code text NOT NULL, "
                "timestamp timestamptz NOT NULL, properties json NOT NULL, source text NOT NULL "
                "DEFAULT 'api', created_at timestamptz NOT NULL, "
                "UNIQUE (external_subscription_id, transaction_id))"
            )
            await conn.execute(
                "CREATE INDEX ON bench_copy_events (external_subscription_id, code, timestamp)"
            )
        now = dt.datetime.now(dt.UTC)
        records = [
            (
                e["transaction_id"],
                e["external_subscription_id"],
                e["code"],
                now,
                orjson.dumps(e["properties"]).decode(),
                "api",
                now,
            )
            for e in make_events(rows, "copy", 0)
        ]
        columns = [
            "transaction_id",
            "external_subscription_id",
            "code",
            "timestamp",
            "properties",
            "source",
            "created_at",
        ]
        started = time.monotonic()
        await conn.copy_records_to_table("bench_copy_events", records=records, columns=columns)
        elapsed = time.monotonic() - started
        landed = await conn.fetchval("SELECT count(*) FROM bench_copy_events")
        await conn.execute("DROP TABLE bench_copy_events")
        return {
            "rows": rows,
            "landed": landed,
            "seconds": round(elapsed, 3),
            "rows_per_s": round(rows / elapsed, 1),
            "like_events_table": has_events,
        }
    finally:
        await conn.close()


def markdown(
    date: str, meta: dict[str, Any], endpoint: dict[str, Any], copy: dict[str, Any]
) -> str:
    lines = [
        f"# Event ingestion into PostgreSQL, {date}",
        "",
        f"Machine: {meta['machine']['nproc']} vCPU, {meta['machine']['cpu']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        f"## faregate `POST {ENDPOINT}`",
        "",
    ]
    if endpoint.get("skipped"):
        lines += [f"Skipped: {endpoint['skipped']}", ""]
    else:
        lines += [
            f"{meta['clients']} concurrent clients, {meta['seconds']:g} s per batch size, "
            "faregate on PostgreSQL + Redis pinned to its own core.",
            "",
            "| events per request | events/s acknowledged | events/s into PostgreSQL "
            "| requests | events accepted | failed events | rows landed | faregate CPU µs/event |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in endpoint["runs"]:
            lines.append(
                f"| {r['batch']:,} | {r['events_per_s']:,.0f} | **{r['landed_per_s']:,.0f}** "
                f"| {sum(r['statuses'].values()):,} | {r['events_accepted']:,} | {r['events_failed']:,} "
                f"| {r['rows_landed']:,} | {r['cpu_us_per_event']:.1f} |"
            )
        lines.append("")
    lines += [
        "## Comparison: PostgreSQL COPY of the same rows",
        "",
        f"{copy['rows']:,} rows in {copy['seconds']:.2f} s = **{copy['rows_per_s']:,.0f} "
        "rows/s** (one connection, binary COPY, into a table "
        + (
            "created `LIKE events INCLUDING ALL`"
            if copy["like_events_table"]
            else "shaped like `events`, with its unique key and index"
        )
        + ").",
        "",
    ]
    if meta.get("notes"):
        lines += ["Notes:", "", *[f"- {n}" for n in meta["notes"]], ""]
    return "\n".join(lines)


async def measure_endpoint(args: argparse.Namespace, instance: FaregateInstance) -> dict[str, Any]:
    url = instance.base_url + ENDPOINT
    await asyncio.to_thread(instance.billing_setup, CODE)
    async with aiohttp.ClientSession() as session:
        status, text = await probe(session, url, instance.admin_key)
    if status == 404:
        return {"skipped": f"`{ENDPOINT}` answered 404: event ingestion is not in this build."}
    if not 200 <= status < 300:
        return {"skipped": f"`{ENDPOINT}` answered {status} to one valid event: {text}"}
    await asyncio.sleep(2.0)  # the smoke request's own usage events flush first
    runs = []
    assert instance.proc
    for batch in args.batch_sizes:
        before = instance.count("events")
        cpu = procs.cpu_seconds(instance.proc.pids())
        run = await load(url, instance.admin_key, batch, args.seconds, args.clients)
        # Acknowledged events are durable in the journal; time until they are all in
        # PostgreSQL too, so that the figure is the rate into the database.
        waited = 0.0
        while instance.count("events") - before < run["events_accepted"] and waited < 60:
            await asyncio.sleep(0.2)
            waited += 0.2
        run["rows_landed"] = instance.count("events") - before
        run["drain_s"] = round(waited, 1)
        run["landed_per_s"] = round(run["rows_landed"] / (run["seconds"] + waited), 1)
        # CPU until the last row landed: accepting and writing (a drain wait adds ~nothing).
        run["cpu_us_per_event"] = (
            (procs.cpu_seconds(instance.proc.pids()) - cpu) * 1e6 / max(run["events_accepted"], 1)
        )
        runs.append(run)
        print(
            f"batch {batch}: {run['events_per_s']:,.0f} events/s, "
            f"{run['rows_landed']:,} rows landed, {run['landed_per_s']:,.0f}/s into PostgreSQL",
            flush=True,
        )
    if args.profile:
        await profile_run(args, instance, url)
    return {"runs": runs}


async def profile_run(args: argparse.Namespace, instance: FaregateInstance, url: str) -> None:
    """The largest batch size once more, with py-spy sampling the server (not a figure)."""
    from benchlib import profile

    assert instance.proc
    py_spy = profile.ensure_py_spy()
    stem = RESULTS / f"profile-ingest-{dt.date.today().isoformat()}"
    raw = stem.with_suffix(".txt")
    seconds = max(5.0, args.seconds)
    recorder = asyncio.create_task(
        asyncio.to_thread(
            profile.record, py_spy, instance.proc.pid, "raw", raw, seconds, procs.NCPU - 2
        )
    )
    await asyncio.sleep(0.5)
    await load(url, instance.admin_key, max(args.batch_sizes), seconds, args.clients)
    await recorder
    summary = profile.summarise(raw)
    stem.with_suffix(".md").write_text(
        f"# Where `POST {ENDPOINT}` spends its CPU, {dt.date.today().isoformat()}\n\n"
        f"py-spy on the server while {args.clients} clients post batches of "
        f"{max(args.batch_sizes):,} events (sampling pauses the process: no figures here).\n\n"
        + summary
    )
    raw.unlink(missing_ok=True)
    print(f"profile: {stem.with_suffix('.md')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    date = dt.date.today().isoformat()
    mock, mock_url = machine.start_mock(WORK)
    instance = FaregateInstance("faregate-ingest", WORK, mock_url, distributed=True)
    try:
        try:
            instance.prepare()
            instance.serve(cpus=[procs.NCPU - 1])
            notes.extend(instance.notes)
            endpoint = asyncio.run(measure_endpoint(args, instance))
        except RuntimeError as err:
            endpoint = {"skipped": f"faregate could not be set up or started: {explain(err)}"}
        if endpoint.get("skipped"):
            print(endpoint["skipped"], file=sys.stderr)
        assert instance.pg_database
        copy = asyncio.run(copy_point(instance.pg_database, args.copy_rows))
    finally:
        instance.close()
        mock.stop()
    notes.append(
        "load average at the end of the run: "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg())
        + " (1, 5, 15 min; other processes share the machine)"
    )
    meta = {
        "date": date,
        "machine": machine.machine(),
        "versions": machine.versions(None),
        "clients": args.clients,
        "seconds": args.seconds,
        "notes": notes,
    }
    stem = RESULTS / f"ingest-{date}"
    Path(f"{stem}.json").write_bytes(
        orjson.dumps({"meta": meta, "endpoint": endpoint, "copy": copy}, option=orjson.OPT_INDENT_2)
    )
    text = markdown(date, meta, endpoint, copy)
    Path(f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
