"""Instructions per request of each whole server, HTTP included, counted by callgrind.

`run.py` reads CPU time, which on these machines drifts 1.5-2x within an hour; `pipeline.py
--instructions` counts instructions, but of the gateway's pipeline alone, without the HTTP
front, the upstream client or a stream's chunks. This counts the whole server process
(every thread: the front, the pipeline, the upstream client, the writers) as a load
generator in this process drives it over HTTP against the mock provider, and does the same
for the bare pass-through, so the two are compared on one repeatable measure.

How: the server runs under `valgrind --tool=callgrind` with instrumentation off while it
starts and warms up. Then instrumentation goes on and the counters are zeroed; `--small`
requests are sent (`--connections` at a time), the server's request records are waited for
(faregate's writers flush in batches) plus one quiet second, and the counts are dumped;
then `--large` requests the same way, and dumped again. Instructions per request are the
difference of the two dumps over the difference of the requests, so start-up, warm-up and
the fixed idle second cancel out. `--repeats` pairs are counted on one server; the median
is reported. faregate's batched writers flush on a timer, stretched here to 10 s as callgrind
stretches the server, so that a flush takes about as many requests' rows as at full speed.

What it does not see: time in the kernel (a proxy's system calls, a big part of the
pass-through's cost), cache misses and waiting. So the ratio it gives is of the user-space
work, not of CPU time; it tells whether a change made the server do less, where `run.py`
on this machine often cannot.

    python bench/instructions.py                          # passthrough and faregate embedded,
                                                          # chat-c32 and stream-c32 (~15 min)
    python bench/instructions.py --targets faregate-embedded --scenarios stream-c32
    python bench/instructions.py --keep bench/work/callgrind   # keep the dumps, for
                                                          # callgrind_annotate
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine
from benchlib.faregate_setup import CONFIG
from benchlib.measure import settle
from benchlib.report import file_tag
from benchlib.scenarios import BY_KEY, Scenario
from benchlib.targets import Context, Target, build

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
WARMUP = 100  # requests before counting starts (caches, imports, pools)
# The writers' flush timers, stretched as callgrind stretches the server (~50x): a flush then
# takes as many requests' rows as it would at full speed, instead of a few.
FLUSH_S = 10.0
QUIET_S = 1.0  # after the last record is stored, before the dump: the same in both dumps
# Work that runs by the clock, not per request: the wallets' sweep, the plan and wallet reads
# each process repeats every second or two, webhook polls, billing runs, the hold sweeper. At
# full speed it is a fraction of a percent of the core; spread over the requests of a run
# under callgrind, which runs the server tens of times slower, it grew with the machine's
# slowness (a chat request counted 1,186,609 early on 2026-12-06 and 1,393,433 on the same
# code once the machine had slowed). Stretched to an hour, so that the count is the requests'
# own work and compares across machines.
CLOCK_S = 3600.0
CLOCKS = {
    "billing": {"plan_check_s": CLOCK_S, "run_interval": CLOCK_S},
    "wallets": {"sweep_interval_s": CLOCK_S, "cache_s": 2 * CLOCK_S},
    "webhooks": {"poll_seconds": CLOCK_S},
    "server": {"hold_sweep_interval_s": CLOCK_S},
}


async def drive(url: str, body: str, auth: str | None, requests: int, connections: int) -> None:
    """`requests` POSTs of `body`, `connections` at a time over kept-alive connections;
    every answer must be a 200 (and a whole stream, ending in [DONE], for a stream)."""
    import aiohttp

    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    stream = b'"stream":true' in body.encode()
    left = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, data=body, headers=headers) as response:
                data = await response.read()
                if response.status != 200 or (stream and b"[DONE]" not in data):
                    raise RuntimeError(f"{url} answered {response.status}: {data[:300]!r}")

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))


class Counted:
    """One target's server under callgrind: switch counting on, dump, read the totals."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid = pid
        self.out = out
        self.dumps = 0

    def control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.pid)], check=True, capture_output=True)

    def dump(self) -> int:
        """Dump the counts since the last dump (or zeroing); return its total."""
        self.control("-d")
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists():
                for line in path.read_text(errors="replace").splitlines():
                    if line.startswith("summary:"):
                        return int(line.split()[1])
            time.sleep(0.2)
        raise RuntimeError(f"callgrind wrote no dump to {path}")


def measure(
    target: Target,
    scenario: Scenario,
    ctx: Context,
    small: int,
    large: int,
    repeats: int,
    keep: Path | None,
) -> dict[str, Any]:
    out_dir = keep or WORK / "callgrind"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{target.name}-{scenario.key}.out"
    for old in out_dir.glob(f"{out.name}*"):
        old.unlink()
    ctx.wrap = (
        shutil.which("valgrind") or "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
    )
    started = time.monotonic()
    target.start(ctx)
    try:
        assert target.proc
        counted = Counted(target.proc.pid, out)
        url, body = target.url(scenario), scenario.body(target.model(scenario))
        records = target.stored() is not None  # faregate stores one per request
        sent = 1  # the smoke request of faregate's start

        def run(requests: int) -> None:
            """Send `requests`, wait for their records (if the target keeps any), then a
            quiet second."""
            nonlocal sent
            asyncio.run(drive(url, body, target.auth, requests, scenario.connections))
            sent += requests
            if records and settle(target, sent, timeout=600) < 0:
                raise RuntimeError(f"{target.name} did not store {sent} records in 10 min")
            time.sleep(QUIET_S)

        # Warmed up with as many requests as the larger count: its batches then prepare every
        # multi-row statement shape the counted ones use (store.inserts.SQLITE_CHUNKS). After
        # 100 requests of warm-up, the 500 counted paid once for preparing the two writers'
        # 128-row inserts, ~4.3 million instructions each, ~20,000 a request.
        run(max(WARMUP, large))
        counted.control("-i", "on")
        counted.control("-z")
        figures, counts = [], []
        for _ in range(repeats):
            run(small)
            first = counted.dump()
            run(large)
            second = counted.dump()
            counts.append({str(small): first, str(large): second})
            figures.append(round((second - first) / (large - small)))
    finally:
        target.stop()
    return {
        "target": target.name,
        "scenario": scenario.key,
        "small": small,
        "large": large,
        "instructions": counts,
        "runs": figures,
        "per_request": round(statistics.median(figures)),
        "minutes": round((time.monotonic() - started) / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="passthrough,faregate-embedded")
    parser.add_argument("--scenarios", default="chat-c32,stream-c32")
    parser.add_argument("--small", type=int, default=100, help="requests in the first count")
    parser.add_argument("--large", type=int, default=500, help="requests in the second count")
    parser.add_argument(
        "--repeats", type=int, default=1, help="pairs of counts per server (median reported)"
    )
    parser.add_argument("--keep", type=Path, help="keep the callgrind dumps in this folder")
    parser.add_argument("--tag", default="", type=file_tag, help="suffix for the result file names")
    args = parser.parse_args()
    if args.large <= args.small:
        parser.error("--large must be more than --small")
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("instructions.py needs valgrind (apt-get install valgrind)")
    unknown = [key for key in args.scenarios.split(",") if key not in BY_KEY]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    scenarios = [BY_KEY[key] for key in args.scenarios.split(",")]
    targets = args.targets.split(",")
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    # One string hash for every server started, as in pipeline.py: dict and set layouts (and
    # so their probing) then do not differ from one server process to the next.
    os.environ["PYTHONHASHSEED"] = "0"
    config = WORK / "instructions-faregate.yaml"
    raw = yaml.safe_load(CONFIG.read_text())
    raw.setdefault("metering", {})["flush_interval"] = FLUSH_S
    raw.setdefault("wallets", {})["journal_flush_s"] = FLUSH_S
    for section, values in CLOCKS.items():
        raw.setdefault(section, {}).update(values)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    mock, mock_url = machine.start_mock(WORK)
    rows: list[dict[str, Any]] = []
    try:
        for scenario in scenarios:
            for target in build(targets):
                ctx = Context(work=WORK, mock_url=mock_url, mock=mock, faregate_config=config)
                row = measure(
                    target, scenario, ctx, args.small, args.large, args.repeats, args.keep
                )
                rows.append(row)
                print(
                    f"{scenario.key:<11} {target.name:<20} {row['per_request']:>12,} "
                    f"instructions per request  (runs {row['runs']}, {row['minutes']} min)",
                    flush=True,
                )
    finally:
        mock.stop()
    write(rows, args.tag)


def write(rows: list[dict[str, Any]], tag: str) -> None:
    date = dt.date.today().isoformat()
    meta = {
        "date": date,
        "machine": machine.machine(),
        "versions": machine.versions(None),
        "method": __doc__.split("\n\n")[2].replace("\n", " "),
    }
    stem = RESULTS / f"instructions-{date}{tag}"
    stem.with_suffix(".json").write_bytes(
        orjson.dumps({"meta": meta, "rows": rows}, option=orjson.OPT_INDENT_2)
    )
    by = {(r["scenario"], r["target"]): r["per_request"] for r in rows}
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    lines = [
        f"# Instructions per request, whole server (callgrind), {date}",
        "",
        f"faregate {meta['versions'].get('faregate', '?')}; {meta['machine']['cpu']}. "
        "User-space instructions of the server process, every thread, per request: the "
        "difference of two counted runs. Kernel time is not counted. Method: "
        "`bench/instructions.py`.",
        "",
        "| scenario | " + " | ".join(targets) + " |",
        "| --- | " + " | ".join("---:" for _ in targets) + " |",
    ]
    for scenario in scenarios:
        cells = [f"{by[(scenario, t)]:,}" if (scenario, t) in by else "-" for t in targets]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    if "passthrough" in targets:
        lines += ["", "Ratio to the pass-through:", ""]
        for scenario in scenarios:
            base = by.get((scenario, "passthrough"))
            for target in targets:
                value = by.get((scenario, target))
                if base and value and target != "passthrough":
                    lines.append(f"- {scenario}, {target}: {value / base:.2f}x")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"\nwrote {stem}.md/.json")


if __name__ == "__main__":
    main()
