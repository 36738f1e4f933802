"""`run.py --profile SCENARIO`: one target under py-spy while wrk drives one scenario.

Writes a flamegraph SVG, a speedscope JSON and a Markdown summary of where the CPU time
goes (self time per function, time under each faregate module) to bench/results/. Only the
thread holding the GIL is sampled (`--gil`): idle pool threads (aiosqlite's, executors')
would otherwise fill the profile, at the price of missing native work done without the GIL.
Sampling pauses the process, so the throughput seen while profiling is not a benchmark figure.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

from benchlib import machine, measure, procs
from benchlib.scenarios import BY_KEY
from benchlib.targets import Context, build

RATE = 250


def ensure_py_spy() -> str:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print("installing py-spy into the dev virtualenv (profiling only)", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "py-spy"],
            check=True,
            capture_output=True,
        )
    return str(exe)


def record(py_spy: str, pid: int, fmt: str, out: Path, seconds: float, core: int) -> None:
    subprocess.run(
        [
            "taskset",
            "-c",
            str(core),
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(RATE),
            "--format",
            fmt,
            "--gil",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )


def summarise(raw: Path, top: int = 30) -> str:
    """Self time per function and total time under each faregate module, from collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        by_package[_package(frames[-1])] += n
        for module in {_module(f) for f in frames if "faregate/" in f or "faregate." in f}:
            under[module] += n
    if not total:
        return "no samples\n"
    lines = [
        f"{total:,} samples at {RATE} Hz.",
        "",
        "### Self time by package",
        "",
        "| share | package |",
        "| ---: | --- |",
        *[f"| {100 * n / total:.1f}% | `{p}` |" for p, n in by_package.most_common(15)],
        "",
        "### Self time, top functions",
        "",
        "| share | function |",
        "| ---: | --- |",
    ]
    lines += [f"| {100 * n / total:.1f}% | `{f}` |" for f, n in own.most_common(top)]
    lines += [
        "",
        "### Time under each faregate module (inclusive)",
        "",
        "| share | module |",
        "| ---: | --- |",
    ]
    lines += [f"| {100 * n / total:.1f}% | `{m}` |" for m, n in under.most_common(top)]
    return "\n".join(lines) + "\n"


def _package(frame: str) -> str:
    """'f (aiohttp/client.py:9)' -> 'aiohttp'; 'g (faregate/api/openai.py:1)' -> 'faregate.api'."""
    path = _module(frame)
    parts = path.split("/")
    if parts[0] == "faregate" and len(parts) > 2:
        return f"faregate.{parts[1]}"
    if len(parts) > 1:
        return parts[0]
    return "python: " + (parts[0].removesuffix(".py") or "event loop / native")


def _module(frame: str) -> str:
    """'handler (faregate/api/openai.py:88)' -> 'faregate/api/openai.py'."""
    inside = frame[frame.rfind("(") + 1 :].rstrip(")")
    path = inside.rsplit(":", 1)[0]
    return path[path.find("faregate/") :] if "faregate/" in path else path


def run_profile(args: argparse.Namespace, work: Path, results: Path) -> int:
    scenario = BY_KEY[args.profile]
    py_spy = ensure_py_spy()
    [target] = build([args.profile_target])
    date = dt.date.today().isoformat()
    stem = results / f"profile-{target.name}-{scenario.key}-{date}{args.tag}"
    seconds = max(5.0, args.duration)
    mock, mock_url = machine.start_mock(work, args.mock_cmd)
    ctx = Context(work=work, mock_url=mock_url, mock=mock)
    layout = measure.layout_for(scenario)
    spinners = procs.Spinners()
    try:
        target.start(ctx)
        target.smoke()
        spinners.start()
        measure.place(target, [target], ctx, layout)
        measure.warm_up(target, scenario, max(args.warmup, 2.0), layout)
        pid = target.pids()[0]
        outputs = (
            ("flamegraph", stem.with_suffix(".svg")),
            ("speedscope", Path(f"{stem}.speedscope.json")),
            ("raw", work / f"{stem.name}.collapsed"),
        )
        for fmt, out in outputs:
            print(f"profiling {target.name} / {scenario.key} -> {out.name}", flush=True)
            load = threading.Thread(
                target=measure.warm_up, args=(target, scenario, seconds + 2, layout)
            )
            load.start()
            record(py_spy, pid, fmt, out, seconds, layout.wrk[0])
            load.join()
    finally:
        spinners.stop()
        target.stop()
        mock.stop()
    summary = (
        f"# Where {target.label} spends its CPU: {scenario.label}, {date}\n\n"
        f"py-spy {RATE} Hz (`--gil`: the thread running Python) for {seconds:g} s while wrk "
        f"ran the scenario "
        f"({layout.describe()}). Flamegraph: `{stem.with_suffix('.svg').name}`; "
        f"speedscope: `{stem.name}.speedscope.json` (open at speedscope.app).\n\n"
        + summarise(outputs[2][1])
    )
    stem.with_suffix(".md").write_text(summary)
    print(summary)
    return 0
