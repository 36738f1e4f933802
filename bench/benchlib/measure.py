"""Measure one cell: place the processes on cores, warm up, run wrk, read CPU and memory.

Core layout on a 2-vCPU machine:
  c=1       wrk, mock and the server under test share the last core (no cross-core wake-ups);
  c>=32     the server under test has the last core to itself; wrk and the mock share core 0.
Servers not under test wait on core 0. A SCHED_IDLE busy loop runs on every core.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson

from benchlib import procs
from benchlib.scenarios import Scenario
from benchlib.targets import Context, Target
from benchlib.wrk import WrkResult, run_wrk

SERVER_CORE = procs.NCPU - 1
CLIENT_CORE = 0


@dataclass(frozen=True)
class Layout:
    server: list[int]
    mock: list[int]
    wrk: list[int]
    idle: list[int]

    def describe(self) -> str:
        return f"server on {self.server}, mock on {self.mock}, wrk on {self.wrk}"


def layout_for(scenario: Scenario) -> Layout:
    if scenario.same_core:
        return Layout([SERVER_CORE], [SERVER_CORE], [SERVER_CORE], [CLIENT_CORE])
    return Layout([SERVER_CORE], [CLIENT_CORE], [CLIENT_CORE], [CLIENT_CORE])


def place(target: Target, others: list[Target], ctx: Context, layout: Layout) -> None:
    for other in others:
        if other is not target and not other.is_mock:
            procs.pin(other.pids(), layout.idle)
    procs.pin(ctx.mock.pids(), layout.mock)
    if not target.is_mock:
        procs.pin(target.pids(), layout.server)


def wrk_env(target: Target, scenario: Scenario) -> dict[str, str]:
    body = scenario.body(target.model(scenario), target.body_extra(scenario))
    headers = "\n".join(f"{k}: {v}" for k, v in target.headers(scenario).items())
    return {"BENCH_BODY": body, "BENCH_AUTH": target.auth or "", "BENCH_HEADERS": headers}


def mock_requests(ctx: Context) -> int | None:
    """The requests the mock has answered so far (its `/_mock/stats`), or None."""
    try:
        with urllib.request.urlopen(f"{ctx.mock_url}/_mock/stats", timeout=10) as response:
            return int(orjson.loads(response.read())["requests"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def warm_up(target: Target, scenario: Scenario, seconds: float, layout: Layout) -> None:
    run_wrk(
        target.url(scenario),
        env=wrk_env(target, scenario),
        connections=scenario.connections,
        duration=seconds,
        cpus=layout.wrk,
    )


class Snapshot:
    def __init__(
        self, target: Target, others: list[Target], ctx: Context, spinner_pids: list[int]
    ) -> None:
        self.at = time.monotonic()
        self.server = procs.cpu_seconds(target.pids())
        self.mock = 0.0 if target.is_mock else procs.cpu_seconds(ctx.mock.pids())
        self.services = procs.cpu_seconds(target.service_pids())
        self.idle = procs.cpu_seconds(
            p for o in others if o is not target and not o.is_mock for p in o.pids()
        )
        self.cores = procs.core_busy()
        self.spinners = [procs.cpu_seconds([p]) for p in spinner_pids]


def one_run(
    target: Target,
    others: list[Target],
    ctx: Context,
    scenario: Scenario,
    layout: Layout,
    seconds: float,
    spinner_pids: list[int],
) -> dict[str, Any]:
    stored = quiesce(target)
    upstream_before = mock_requests(ctx)
    before = Snapshot(target, others, ctx, spinner_pids)
    result = run_wrk(
        target.url(scenario),
        env=wrk_env(target, scenario),
        connections=scenario.connections,
        duration=seconds,
        cpus=layout.wrk,
    )
    after = Snapshot(target, others, ctx, spinner_pids)
    landed = None
    if stored is not None:
        landed = settle(target, stored + result.requests)
        # The server's CPU until the run's records are stored: the batched writers' work for
        # the run counts, even the part done after the load generator stopped.
        after.server = procs.cpu_seconds(target.pids())
        after.services = procs.cpu_seconds(target.service_pids())
    summary = summarise_run(result, before, after, layout)
    upstream_after = mock_requests(ctx)
    if upstream_before is not None and upstream_after is not None and result.requests:
        # 1 when every request reached the upstream, ~0 when a cache answered them.
        summary["upstream_per_req"] = round((upstream_after - upstream_before) / result.requests, 4)
    if landed is not None:
        summary["stored_after_s"] = landed
    return summary


def quiesce(target: Target, timeout: float = 60.0) -> int | None:
    """The target's stored request records once the count stops growing (what an earlier
    run or the warm-up left to write has landed), so a run measures its own writes only."""
    last = target.stored()
    started = time.monotonic()
    while last is not None and time.monotonic() - started < timeout:
        time.sleep(0.3)
        now = target.stored()
        if now == last:
            break
        last = now
    return last


def settle(target: Target, expected: int, timeout: float = 60.0) -> float:
    """Wait until `expected` request records are stored; the seconds that took after the
    load stopped (how far the batched writers were behind), or -1 on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        stored = target.stored()
        if stored is not None and stored >= expected:
            return round(time.monotonic() - started, 2)
        time.sleep(0.05)
    return -1.0


def _core_load(before: Snapshot, after: Snapshot, core: int, wall: float) -> float:
    """Share of `core` (0-1) used by real work: all busy time minus its idle busy loop."""
    busy = after.cores.get(core, 0.0) - before.cores.get(core, 0.0)
    if core < len(after.spinners):
        busy -= after.spinners[core] - before.spinners[core]
    return max(0.0, busy / wall)


def summarise_run(
    r: WrkResult, before: Snapshot, after: Snapshot, layout: Layout
) -> dict[str, Any]:
    wall = after.at - before.at
    n = max(r.requests, 1)
    server = after.server - before.server
    services = after.services - before.services
    mock = after.mock - before.mock
    idle = after.idle - before.idle
    busy_total = sum(after.cores.values()) - sum(before.cores.values())
    spin_total = sum(after.spinners) - sum(before.spinners)
    ours = server + services + mock + idle + r.cpu_seconds
    return {
        "requests": r.requests,
        "seconds": round(r.seconds, 3),
        "rps": round(r.rps, 1),
        "p50_ms": r.latency_us["p50"] / 1000,
        "p90_ms": r.latency_us["p90"] / 1000,
        "p99_ms": r.latency_us["p99"] / 1000,
        "max_ms": r.latency_us["max"] / 1000,
        "errors": r.error_count,
        "error_detail": r.errors,
        "server_cpu_s": round(server, 3),
        "cpu_ms_per_req": round(server * 1000 / n, 4),
        "services_ms_per_req": round(services * 1000 / n, 4),
        "mock_cpu_s": round(mock, 3),
        "idle_servers_cpu_s": round(idle, 3),
        "wrk_cpu_pct": round(100 * r.cpu_seconds / wall, 1),
        "wrk_core_pct": round(100 * _core_load(before, after, layout.wrk[0], wall), 1),
        "server_core_pct": round(100 * _core_load(before, after, layout.server[0], wall), 1),
        "unattributed_cores": round(max(0.0, busy_total - spin_total - ours) / wall, 2),
    }


def _median_range(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [float(r[key]) for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(runs: list[dict[str, Any]], target: Target) -> dict[str, Any]:
    rss, hwm = procs.memory_kb(target.pids())
    out: dict[str, Any] = {
        k: _median_range(runs, k)
        for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req", "services_ms_per_req")
    }
    out.update(
        errors=sum(r["errors"] for r in runs),
        requests=sum(r["requests"] for r in runs),
        rss_mb=round(rss / 1024, 1),
        peak_rss_mb=round(hwm / 1024, 1),
        wrk_cpu_pct_max=max(r["wrk_cpu_pct"] for r in runs),
        wrk_core_pct_max=max(r["wrk_core_pct"] for r in runs),
        server_core_pct_max=max(r["server_core_pct"] for r in runs),
        unattributed_cores_max=max(r["unattributed_cores"] for r in runs),
        idle_servers_cpu_s_max=max(r["idle_servers_cpu_s"] for r in runs),
        stored_after_s_max=max((r.get("stored_after_s", 0.0) for r in runs), default=0.0),
        runs=runs,
    )
    if all("upstream_per_req" in r for r in runs):
        out["upstream_per_req"] = _median_range(runs, "upstream_per_req")
    return out
