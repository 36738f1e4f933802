"""`make bench`: faregate against the mock provider, a bare pass-through and three peer gateways.

Installs what it needs (wrk with apt-get, LiteLLM into bench/.venv-litellm, TensorZero into
bench/.venv-tensorzero, Portkey's gateway into bench/portkey with npm, matplotlib on
demand), starts every server on 127.0.0.1, measures every cell and writes
bench/results/results-DATE.{md,json,png}. See bench/README.md for what the figures mean.

    python bench/run.py                    # 3 x 10 s per cell after a 3 s warm-up
    python bench/run.py --quick            # 1 x 3 s per cell
    python bench/run.py --profile chat-c32 # faregate under py-spy for one scenario
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import orjson
from benchlib import machine, measure, procs, report
from benchlib.faregate_setup import explain
from benchlib.scenarios import BY_KEY, SCENARIOS
from benchlib.targets import (
    Context,
    Target,
    build,
    litellm_version,
    portkey_versions,
    tensorzero_version,
)
from benchlib.wrk import ensure_wrk

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
ALL_TARGETS = [
    "direct",
    "passthrough",
    "faregate-embedded",
    "faregate-pg-redis",
    "litellm",
    "portkey",
    "tensorzero",
]
# --holds: each backend with and without a prepaid wallet, to read off what a hold costs.
HOLD_TARGETS = [
    "direct",
    *(
        f"{b}{v}"
        for b in ("faregate-embedded", "faregate-pg", "faregate-pg-redis")
        for v in ("", "-nowallet")
    ),
]
HOLD_SCENARIOS = ["chat-c1", "chat-c32"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 x 3 s per cell, 1 s warm-up")
    p.add_argument("--repeats", type=int, help="runs per cell (default 3)")
    p.add_argument("--duration", type=float, help="seconds per run (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per cell (default 3)")
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated")
    p.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated: " + ", ".join(s.key for s in SCENARIOS),
    )
    p.add_argument("--no-spin", action="store_true", help="no idle busy loops on the cores")
    p.add_argument(
        "--profile",
        nargs="?",
        const="chat-c32",
        metavar="SCENARIO",
        help="run faregate embedded under py-spy for one scenario instead",
    )
    p.add_argument(
        "--profile-target",
        default="faregate-embedded",
        help="the target --profile samples (default faregate-embedded)",
    )
    p.add_argument(
        "--holds",
        action="store_true",
        help="what the wallet hold + settle adds: each backend with and without a wallet",
    )
    p.add_argument("--mock-cmd", help="another mock command; {port} {config} {python} filled in")
    p.add_argument(
        "--tag", default="", type=report.file_tag, help="suffix for the result file names"
    )
    args = p.parse_args(argv)
    if args.holds:
        explicit = set(argv if argv is not None else sys.argv[1:])
        if not any(a.startswith("--targets") for a in explicit):
            args.targets = ",".join(HOLD_TARGETS)
        if not any(a.startswith("--scenarios") for a in explicit):
            args.scenarios = ",".join(HOLD_SCENARIOS)
        args.tag = args.tag or "-holds"
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    args.targets = [t for t in args.targets.split(",") if t]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in [*args.scenarios, args.profile or "chat-c1"] if s not in BY_KEY]
    if unknown:
        p.error(f"unknown scenarios {unknown}")
    return args


def layout_notes(args: argparse.Namespace) -> list[str]:
    server, client = measure.SERVER_CORE, measure.CLIENT_CORE
    return [
        f"c=1: wrk, the mock and the server under test all pinned to core {server} (taskset / "
        "sched_setaffinity on every thread), so no request waits for an idle vCPU to wake.",
        f"c>=32: the server under test alone on core {server}; wrk (1 thread) and the mock on "
        f"core {client}. *direct* keeps the mock there too, so at c>=32 it shows the ceiling "
        "of the client side (wrk + mock sharing one core), not the mock on a core of its own.",
        f"Servers not under test stay up, parked on core {client}; their CPU during each run is "
        "recorded (`idle_servers_cpu_s` in the JSON).",
        "Idle busy loops: "
        + (
            "off (--no-spin)."
            if args.no_spin
            else "one SCHED_IDLE `while True: pass` per core, pre-empted by any real "
            "work, keeps the vCPUs from parking."
        ),
        f"Each cell: {args.warmup:g} s warm-up per target, then {args.repeats} x "
        f"{args.duration:g} s runs, round-robin over the targets (run 1 of every target, then "
        "run 2, ...) so that a burst of outside load hits every target alike.",
        "PostgreSQL and Redis are the machine's shared services, not pinned; their CPU is shown "
        "beside faregate's as `+ x PG/Redis` (it includes any other client of those services).",
        f"Every benchmark process (wrk, mock, servers) runs in its own session at autogroup "
        f"nice {procs.BENCH_NICE} (the busy loops at {procs.SPIN_NICE}), so outside work on the "
        "machine gets a core only when the benchmark leaves it; what outside work still ran is "
        "recorded per run as `unattributed_cores` (busy CPU not spent by the benchmark's "
        "processes or busy loops; it includes interrupt handling).",
        "wrk: 1 thread, keep-alive connections = concurrency, 30 s request timeout; a Lua script "
        "POSTs the same JSON body with an Authorization header (and the headers a target "
        "routes by: Portkey's) and prints percentiles as JSON.",
    ]


def peer_versions(targets: list[str]) -> dict[str, str]:
    out = portkey_versions() if "portkey" in targets else {}
    tensorzero = tensorzero_version() if "tensorzero" in targets else None
    if tensorzero:
        out["TensorZero"] = tensorzero
    return out


def set_niceness(notes: list[str]) -> None:
    """Run the harness and every child at a raised priority, so that outside work on this
    shared machine takes CPU only when the benchmark leaves it."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, procs.BENCH_NICE)
    except PermissionError:
        notes.append("could not raise priority (not root): outside work competed as equal")


def start_targets(targets: list[Target], ctx: Context, notes: list[str]) -> list[Target]:
    live = []
    for target in targets:
        print(f"starting {target.name} ...", flush=True)
        try:
            target.start(ctx)
            target.smoke()
        except Exception as err:  # a target that cannot start is reported, not fatal
            notes.append(f"{target.name} not measured: {explain(err)}")
            print(f"  {target.name} not measured: {str(err)[-3000:]}", file=sys.stderr)
            target.stop()
            continue
        notes.extend(f"{target.name}: {n}" for n in target.notes)
        live.append(target)
    return live


def run_cells(
    args: argparse.Namespace, live: list[Target], ctx: Context, spinners: procs.Spinners
) -> dict[str, dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for key in args.scenarios:
        scenario = BY_KEY[key]
        layout = measure.layout_for(scenario)
        print(f"\n== {scenario.label}: {layout.describe()}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in live}
        for target in live:
            measure.place(target, live, ctx, layout)
            if args.warmup > 0:
                measure.warm_up(target, scenario, args.warmup, layout)
        for i in range(args.repeats):
            for target in live:
                measure.place(target, live, ctx, layout)
                run = measure.one_run(
                    target, live, ctx, scenario, layout, args.duration, spinners.pids()
                )
                runs[target.name].append(run)
                print(
                    f"  run {i + 1} {target.name:18} {run['rps']:9,.0f} req/s  "
                    f"p50 {run['p50_ms']:8.2f} ms  p99 {run['p99_ms']:8.2f} ms  "
                    f"cpu {run['cpu_ms_per_req']:7.3f} ms/req  err {run['errors']}  "
                    f"wrk {run['wrk_cpu_pct']:.0f}% (core {run['wrk_core_pct']:.0f}%)"
                    + (
                        f"  stored +{run['stored_after_s']:.2f} s"
                        if "stored_after_s" in run
                        else ""
                    ),
                    flush=True,
                )
        cells[key] = {t.name: measure.aggregate(runs[t.name], t) for t in live}
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    ensure_wrk(WORK / "logs" / "apt.log")
    if args.profile:
        from benchlib.profile import run_profile

        return run_profile(args, WORK, RESULTS)
    started = time.time()
    date = dt.date.today().isoformat()
    notes: list[str] = []
    set_niceness(notes)
    targets = build(args.targets)
    mock, mock_url = machine.start_mock(WORK, args.mock_cmd)
    ctx = Context(work=WORK, mock_url=mock_url, mock=mock)
    spinners = procs.Spinners()
    live: list[Target] = []
    try:
        live = start_targets(targets, ctx, notes)
        if not args.no_spin:
            spinners.start()
        cells = run_cells(args, live, ctx, spinners)
    finally:
        spinners.stop()
        for target in live:
            target.stop()
        mock.stop()
    raw = RESULTS / f"results-{date}{'-quick' if args.quick else ''}{args.tag}.raw.json"
    raw.write_bytes(orjson.dumps(cells))  # kept until the report is written
    report.add_latency_deltas(cells)
    labels = {t.name: t.label for t in targets}
    meta: dict[str, Any] = {
        "date": date,
        "quick": args.quick,
        "repeats": args.repeats,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "spin": not args.no_spin,
        "machine": machine.machine(),
        "versions": machine.versions(litellm_version(), peer_versions(args.targets)),
        "layout": layout_notes(args),
        "targets": labels,
        "notes": notes,
        "elapsed_s": round(time.time() - started),
    }
    meta["checks"] = report.checks(cells, {t.name: t.dropped for t in live if t.dropped})
    meta["cache"] = report.cache_figures(cells)
    meta["peers"] = report.peer_figures(cells)
    stem = f"results-{date}{'-quick' if args.quick else ''}{args.tag}"
    report.write_json(RESULTS / f"{stem}.json", meta, cells)
    (RESULTS / f"{stem}.md").write_text(report.markdown(meta, cells, labels))
    report.chart(
        RESULTS / f"{stem}.png",
        cells,
        labels,
        f"faregate vs pass-through vs LiteLLM, Portkey and TensorZero, {date}"
        + (" (quick)" if args.quick else ""),
    )
    raw.unlink()
    if args.holds:
        section = report.holds_section(meta, cells, stem)
        report.update_readme(BENCH / "README.md", section, *report.HOLDS_MARKERS)
        print(section)
    elif not args.tag:
        report.update_readme(BENCH / "README.md", report.readme_section(meta, cells, labels, stem))
    print(f"\nwrote {RESULTS / stem}.md/.json/.png")
    print(report.markdown(meta, cells, labels).split("## Targets", 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
