"""`make soak`: minutes of mixed traffic through faregate embedded, whole pipeline on.

Checks three things and exits non-zero if one fails: resident memory at the end is within
10% of what it was after the warm-up; no request failed; and the usage records in the
database (`SELECT count(*) FROM requests`) equal the chat requests wrk completed. Writes
bench/results/soak-DATE.md and .json (`--tag x`: soak-DATE-x, for another run of the day).

    python bench/soak.py                 # 10 minutes
    python bench/soak.py --minutes 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from benchlib import machine, procs
from benchlib.faregate_setup import FaregateInstance
from benchlib.report import file_tag
from benchlib.wrk import WrkResult, ensure_wrk, run_wrk

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
MODELS = "bench-fast,bench-slow50,bench-paced"
DRAIN_SECONDS = 3  # longer than the slowest request (paced stream, ~0.2 s)
RSS_TOLERANCE = 0.10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument(
        "--warmup-minutes",
        type=float,
        help="when the reference RSS is taken (default: a fifth of the run, max 1)",
    )
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--mock-cmd", help="another mock command; {port} {config} {python} filled in")
    p.add_argument(
        "--tag",
        default="",
        type=file_tag,
        help="suffix for the result file names (another run of the day)",
    )
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.minutes > 24 * 60:
        p.error("--minutes must be between 0 and 1440")
    if args.warmup_minutes is None:
        args.warmup_minutes = min(1.0, args.minutes / 5)
    return args


def settled_count(instance: FaregateInstance, timeout: float = 20.0) -> int:
    """The row count once the batched writer has flushed (unchanged for two seconds)."""
    time.sleep(1.0)
    last, stable_since = instance.count(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = instance.count()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 2.0:
            break
    return last


def sample_rss(
    proc: procs.Proc, stop: threading.Event, every: float, samples: list[tuple[float, float]]
) -> None:
    started = time.monotonic()
    while not stop.wait(every):
        rss, _ = procs.memory_kb(proc.pids())
        samples.append((round(time.monotonic() - started, 1), round(rss / 1024, 1)))


def soak(args: argparse.Namespace, instance: FaregateInstance, notes: list[str]) -> dict[str, Any]:
    assert instance.proc and instance.key
    seconds = args.minutes * 60
    baseline = settled_count(instance)
    cpu_before = procs.cpu_seconds(instance.proc.pids())
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(
        target=sample_rss, args=(instance.proc, stop, max(1.0, min(10.0, seconds / 30)), samples)
    )
    sampler.start()
    env = {
        "BENCH_MODELS": MODELS,
        "BENCH_AUTH": instance.key,
        "BENCH_DRAIN_AT": str(int(time.time() + seconds) + 1),
        "BENCH_HEALTH_PATH": "/healthz",
    }
    try:
        result: WrkResult = run_wrk(
            instance.base_url + "/v1/chat/completions",
            script="soak.lua",
            env=env,
            connections=args.connections,
            duration=seconds + DRAIN_SECONDS + 1,
            cpus=[0],
        )
    finally:
        stop.set()
        sampler.join()
    cpu = procs.cpu_seconds(instance.proc.pids()) - cpu_before
    rows = settled_count(instance) - baseline
    rss_end = round(procs.memory_kb(instance.proc.pids())[0] / 1024, 1)
    warm_at = args.warmup_minutes * 60
    rss_warm = next((mb for t, mb in samples if t >= warm_at), samples[0][1] if samples else 0.0)
    extra = result.extra
    chat_ok, chat_failed = int(extra["chat_ok"]), int(extra["chat_failed"])
    errors = result.error_count + chat_failed + int(extra["stream_unfinished"])
    growth = (rss_end - rss_warm) / rss_warm if rss_warm else 0.0
    return {
        "seconds": seconds,
        "connections": args.connections,
        "models": MODELS.split(","),
        "chat_requests": chat_ok + chat_failed,
        "chat_ok": chat_ok,
        "chat_failed": chat_failed,
        "stream_unfinished": int(extra["stream_unfinished"]),
        "socket_errors": result.errors,
        "health_checks": int(extra["health_checks"]),
        "errors": errors,
        "usage_rows": rows,
        "rps": round((chat_ok + chat_failed) / seconds, 1),
        "cpu_ms_per_req": round(cpu * 1000 / max(chat_ok, 1), 3),
        "p50_ms": result.latency_us["p50"] / 1000,
        "p99_ms": result.latency_us["p99"] / 1000,
        "rss_warm_mb": rss_warm,
        "rss_end_mb": rss_end,
        "rss_growth": round(growth, 4),
        "rss_samples": samples,
        "checks": {
            "rss_within_10pct": abs(growth) <= RSS_TOLERANCE,
            "no_errors": errors == 0,
            "usage_rows_equal_requests": rows == chat_ok + chat_failed,
        },
    }


def markdown(date: str, meta: dict[str, Any], r: dict[str, Any]) -> str:
    ok = all(r["checks"].values())
    checks = r["checks"]
    lines = [
        f"# faregate soak, {date}",
        "",
        f"**{'PASS' if ok else 'FAIL'}** — {r['seconds'] / 60:g} minutes of mixed traffic "
        f"(streaming and non-streaming chat over {', '.join(r['models'])}; "
        f"{r['connections']} connections) through faregate embedded (SQLite, in-process "
        "counters) with its whole pipeline on. faregate alone on core "
        f"{procs.NCPU - 1}; wrk and the mock on core 0.",
        "",
        f"Machine: {meta['machine']['nproc']} vCPU, {meta['machine']['cpu']}. "
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "| check | figure | result |",
        "| --- | --- | --- |",
        f"| RSS after warm-up vs at the end (within 10%) | {r['rss_warm_mb']:.1f} MB -> "
        f"{r['rss_end_mb']:.1f} MB ({r['rss_growth']:+.1%}) | "
        f"{'pass' if checks['rss_within_10pct'] else '**fail**'} |",
        f"| errors (non-2xx, socket errors, unfinished streams) | {r['errors']} | "
        f"{'pass' if checks['no_errors'] else '**fail**'} |",
        f"| usage rows written = chat requests completed | {r['usage_rows']:,} rows, "
        f"{r['chat_requests']:,} requests | "
        f"{'pass' if checks['usage_rows_equal_requests'] else '**fail**'} |",
        "",
        f"Throughput {r['rps']:,} chat requests/s; faregate CPU {r['cpu_ms_per_req']} ms per "
        f"request; latency p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms (includes the "
        "50 ms and paced-stream deployments).",
        "",
        "RSS over time (s, MB): " + ", ".join(f"{t:g}: {mb:g}" for t, mb in r["rss_samples"]),
        "",
        "The last few seconds of the run request only `/healthz`, so no metered request is in "
        "flight when wrk stops; rows are counted once the batched writer has flushed.",
        "",
    ]
    if meta.get("notes"):
        lines += ["Notes:", "", *[f"- {n}" for n in meta["notes"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ensure_wrk(WORK / "logs" / "apt.log")
    notes: list[str] = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, procs.BENCH_NICE)
    except PermissionError:
        notes.append("could not raise priority (not root)")
    date = dt.date.today().isoformat()
    mock, mock_url = machine.start_mock(WORK, args.mock_cmd)
    instance = FaregateInstance("faregate-soak", WORK, mock_url)
    spinners = procs.Spinners()
    try:
        instance.prepare()
        instance.serve(cpus=[procs.NCPU - 1])
        notes.extend(instance.notes)
        spinners.start()
        print(f"soaking for {args.minutes:g} min ...", flush=True)
        result = soak(args, instance, notes)
    finally:
        spinners.stop()
        instance.close()
        mock.stop()
    meta = {
        "date": date,
        "machine": machine.machine(),
        "notes": notes,
        "versions": machine.versions(None),
        "sections": instance.sections,
    }
    stem = RESULTS / f"soak-{date}{args.tag}"
    Path(f"{stem}.json").write_bytes(
        orjson.dumps({"meta": meta, "result": result}, option=orjson.OPT_INDENT_2)
    )
    text = markdown(date, meta, result)
    Path(f"{stem}.md").write_text(text)
    print(text)
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
