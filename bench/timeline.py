"""When the slow requests happen: every request's latency with its time, at concurrency 1.

wrk reports percentiles, not when the slow requests came. This sends one request at a time
(non-streaming chat, over one kept-alive connection, from a plain blocking client) to faregate
embedded and records each request's start and latency. The slow ones (over `--slow` ms) are
grouped into bursts (slow requests less than 20 ms apart): bursts that recur at the writers'
flush interval are the batched writers' work taking turns with the requests.

Its percentiles count each request once, as a client that waits for every answer sees them.
wrk's count more: for a request that took two expected intervals (the run's time per
request) or more, wrk also counts the requests a client sending at that pace would have
sent meanwhile (coordinated omission), so one long stall weighs like many late requests.
The table gives the p99 both ways; run.py's c = 1 cells are wrk's.

Two layouts: `same-core` (server, mock and client on one core, as run.py's c = 1 cells) and
`own-core` (the server alone on its core). Writes `results/timeline-DATE.md`.

`--sched` also records the kernel's context switches (`perf sched`, benchlib/sched.py) during
the same-core run and splits the time of the slow requests, and of typical ones (p40-p60),
by what ran on the core meanwhile: the server's event loop, its other threads, the mock, the
client, the idle loops, anything else.

    python bench/timeline.py                 # 10 s per layout
    python bench/timeline.py --seconds 20 --target faregate-pg
    python bench/timeline.py --sched
    python bench/timeline.py --writers

`--writers` starts the server with a probe (`benchlib/writer_probe`) that times the batched
writers' steps on the event loop and their calls on SQLite's thread, and adds to the report
what they cost and which requests they ran beside (matched on the shared monotonic clock).
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import itertools
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine, procs, sched
from benchlib.measure import CLIENT_CORE, SERVER_CORE, Layout, place
from benchlib.scenarios import BY_KEY
from benchlib.targets import Context, Target, build

RESULTS = Path(__file__).resolve().parent / "results"
LAYOUTS = {
    "same-core": Layout([SERVER_CORE], [SERVER_CORE], [SERVER_CORE], [CLIENT_CORE]),
    "own-core": Layout([SERVER_CORE], [CLIENT_CORE], [CLIENT_CORE], [CLIENT_CORE]),
}
BURST_GAP_S = 0.02


class Client:
    """One kept-alive HTTP/1.1 connection; `call` sends the request and reads the whole
    answer (Content-Length framed)."""

    def __init__(self, target: Target) -> None:
        scenario = BY_KEY["chat-c1"]
        url = urlparse(target.url(scenario))
        body = scenario.body(target.model(scenario)).encode()
        auth = f"Authorization: Bearer {target.auth}\r\n" if target.auth else ""
        self.request = (
            f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.sock = socket.create_connection((url.hostname, url.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self) -> None:
        self.sock.sendall(self.request)
        buffer = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            head = buffer[:end].lower()
            length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(buffer[: end + 4 + length].decode(errors="replace"))
            if len(buffer) >= end + 4 + length:
                return

    def close(self) -> None:
        self.sock.close()


def drive(client: Client, seconds: float) -> tuple[float, list[tuple[float, float]]]:
    """When the first request started (`time.perf_counter()`), and the (start since then,
    latency) of every request, in seconds."""
    samples = []
    t0 = time.perf_counter()
    while (start := time.perf_counter()) - t0 < seconds:
        client.call()
        samples.append((start - t0, time.perf_counter() - start))
    return t0, samples


def bursts(samples: list[tuple[float, float]], slow_s: float) -> list[tuple[float, float, int]]:
    """(start, length, slow requests) of each run of slow requests less than
    BURST_GAP_S apart."""
    out: list[tuple[float, float, int]] = []
    for at, latency in samples:
        if latency < slow_s:
            continue
        if out and at - (out[-1][0] + out[-1][1]) < BURST_GAP_S:
            first, _, count = out[-1]
            out[-1] = (first, at + latency - first, count + 1)
        else:
            out.append((at, latency, 1))
    return out


def as_wrk_counts(latencies: list[float], seconds: float) -> list[float]:
    """The latencies with the samples wrk 4 adds for coordinated omission (its
    `stats_correct`): the expected interval is the run's time per request, and every latency
    of two intervals or more also counts the requests a client sending at that pace would
    have sent meanwhile, each as late as it would have been (the latency less one interval,
    less two, ... while more than one interval). A stall of S ms at c = 1 thus counts as
    about S / interval late requests, not one: run.py's p99 at c = 1 is this one."""
    expected = seconds / len(latencies)
    counted = list(latencies)
    for latency in latencies:
        if latency >= 2 * expected:
            late = latency - expected
            while late > expected:
                counted.append(late)
                late -= expected
    return counted


def describe(name: str, samples: list[tuple[float, float]], slow_s: float) -> list[str]:
    latencies = sorted(latency for _, latency in samples)
    n = len(latencies)

    def pct(p: float, values: list[float] = latencies) -> str:
        return f"{values[min(len(values) - 1, int(len(values) * p))] * 1e3:.2f}"

    seconds = samples[-1][0] + samples[-1][1] if samples else 0.0
    wrk = sorted(as_wrk_counts(latencies, seconds)) if latencies else latencies

    found = bursts(samples, slow_s)
    slow = sum(count for _, _, count in found)
    in_bursts = sum(count for _, _, count in found if count > 1)
    starts = [start for start, _, count in found if count > 1]
    period = (
        statistics.median(b - a for a, b in itertools.pairwise(starts)) if len(starts) > 2 else 0
    )
    length = statistics.median(size for _, size, count in found if count > 1) if starts else 0
    return [
        f"| {name} | {n:,} | {pct(0.5)} | {pct(0.9)} | {pct(0.99)} | {pct(0.999)} | "
        f"{pct(0.99, wrk)} | "
        f"{slow:,} ({100 * slow / n:.1f}%) | {100 * in_bursts / max(slow, 1):.0f}% | "
        f"{period * 1e3:.0f} ms | {length * 1e3:.0f} ms |"
    ]


def attribute(
    slices: list[sched.Slice],
    parties: sched.Parties,
    t0: float,
    samples: list[tuple[float, float]],
    slow_s: float,
) -> list[str]:
    """Table rows: for the slow requests and for typical ones (p40-p60), the mean latency
    and what ran on the core during it, in ms per request."""
    by_latency = sorted(samples, key=lambda sample: sample[1])
    n = len(by_latency)
    groups = {
        f"slow (over {slow_s * 1e3:g} ms)": [x for x in by_latency if x[1] >= slow_s],
        "typical (p40-p60)": by_latency[int(n * 0.4) : int(n * 0.6)],
    }
    rows = []
    for name, group in groups.items():
        if not group:
            continue
        ran = sched.ran_during(slices, parties, ((t0 + a, t0 + a + d) for a, d in group))
        if not ran.windows:
            continue
        cells = " | ".join(f"{ran.per_window_ms(role):.3f}" for role in sched.ROLES)
        rows.append(
            f"| {name} | {ran.windows:,} | {ran.length / ran.windows * 1e3:.3f} | {cells} | "
            f"{ran.unattributed_ms():.3f} |"
        )
    return rows


PROBE = Path(__file__).resolve().parent / "benchlib" / "writer_probe"
EPISODE_GAP_S = 0.005


def writer_work(
    items: list[list[Any]], t0: float, samples: list[tuple[float, float]], slow_s: float
) -> list[str]:
    """Report lines: what the batched writers did during the same-core run (`--writers`),
    and which requests it landed on. `items` are the probe's [kind, name, start, seconds,
    cpu]; a request is matched with the items that ran during it by the shared clock."""
    start, end = t0, t0 + samples[-1][0] + samples[-1][1]
    items = sorted((i for i in items if start <= i[2] <= end), key=lambda i: i[2])
    if not items:
        return ["The writer probe recorded nothing during the same-core run.", ""]
    seconds = end - start
    by_name: dict[str, list[float]] = {}
    for kind, name, _, length, cpu in items:
        entry = by_name.setdefault(f"{kind}: {name}", [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += length
        entry[2] += cpu
    lines = [
        "What the batched writers did during the same-core run (`--writers`: the probe in "
        "`benchlib/writer_probe` times each step of the writers' tasks on the event loop and "
        "each call on SQLite's thread, in wall and thread CPU time), the costliest first:",
        "",
        "| where | per second | mean ms | CPU ms a second |",
        "| --- | ---: | ---: | ---: |",
    ]
    costliest = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:16]
    for name, (count, length, cpu) in costliest:
        lines.append(
            f"| {name} | {count / seconds:.1f} | {length / count * 1e3:.3f} | "
            f"{cpu / seconds * 1e3:.1f} |"
        )
    starts = [i[2] for i in items]

    def beside(a: float, b: float) -> dict[str, float]:
        """Seconds of each item name that ran within [a, b]."""
        out: dict[str, float] = {}
        k = max(0, bisect.bisect_left(starts, a - 0.05))
        while k < len(items) and items[k][2] < b:
            kind, name, at, length, _ = items[k]
            overlap = min(b, at + length) - max(a, at)
            if overlap > 0:
                key = f"{kind}: {name}"
                out[key] = out.get(key, 0.0) + overlap
            k += 1
        return out

    ordered = sorted(samples, key=lambda sample: sample[1])
    n = len(ordered)
    groups = {
        f"slow (over {slow_s * 1e3:g} ms)": [x for x in ordered if x[1] >= slow_s],
        "typical (p40-p60)": ordered[int(n * 0.4) : int(n * 0.6)],
    }
    lines += [
        "",
        "Writer work that ran during each group's requests, ms per request (mean):",
        "",
        "| requests | count | beside any writer work | writer work | the largest parts |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label, group in groups.items():
        if not group:
            continue
        totals: dict[str, float] = {}
        met = 0
        for at, latency in group:
            found = beside(t0 + at, t0 + at + latency)
            met += bool(found)
            for key, value in found.items():
                totals[key] = totals.get(key, 0.0) + value
        parts = sorted(totals.items(), key=lambda kv: -kv[1])[:4]
        lines.append(
            f"| {label} | {len(group):,} | {100 * met / len(group):.0f}% | "
            f"{sum(totals.values()) / len(group) * 1e3:.3f} | "
            + "; ".join(f"{key} {value / len(group) * 1e3:.3f}" for key, value in parts)
            + " |"
        )
    # Flushes: items less than EPISODE_GAP_S apart; the requests each one met.
    episodes: list[list[float]] = []
    for _, _, at, length, _ in items:
        if episodes and at - episodes[-1][1] < EPISODE_GAP_S:
            episodes[-1][1] = max(episodes[-1][1], at + length)
            episodes[-1][2] += length
        else:
            episodes.append([at, at + length, length])
    request_starts = [t0 + at for at, _ in samples]
    met_by: dict[int, int] = {}
    for first, last, _ in episodes:
        k = max(0, bisect.bisect_left(request_starts, first - 0.05))
        count = 0
        while k < len(samples) and request_starts[k] < last:
            count += request_starts[k] + samples[k][1] > first
            k += 1
        met_by[count] = met_by.get(count, 0) + 1
    work = statistics.median(e[2] for e in episodes) * 1e3
    span = statistics.median(e[1] - e[0] for e in episodes) * 1e3
    lines += [
        "",
        f"Flushes (writer work less than {EPISODE_GAP_S * 1e3:g} ms apart): {len(episodes):,}, "
        f"median {work:.2f} ms of work over {span:.2f} ms; requests each met: "
        + ", ".join(f"{k} ({v:,})" for k, v in sorted(met_by.items()))
        + ".",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per layout (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--slow", type=float, default=2.0, help="ms above which a request is slow")
    parser.add_argument("--target", default="faregate-embedded")
    parser.add_argument(
        "--sched", action="store_true", help="what ran on the core during the slow requests"
    )
    parser.add_argument(
        "--writers",
        action="store_true",
        help="time the batched writers inside the server, and match them with the requests",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faregate-timeline-"))
    perf = sched.ensure_perf(work / "install.log") if args.sched else None
    mock, mock_url = machine.start_mock(work, None)
    ctx = Context(work=work, mock_url=mock_url, mock=mock)
    [target] = build([args.target])
    spinners = procs.Spinners()
    rows: list[str] = []
    ran: list[str] = []
    done = False
    if args.writers:  # for the server only: the mock has started already
        os.environ["FAREGATE_BENCH_WRITER_PROBE"] = str(work)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROBE), os.environ.get("PYTHONPATH")) if p
        )
    writers: list[str] = []
    same_core: tuple[float, list[tuple[float, float]]] | None = None
    server_pids: list[int] = []
    try:
        target.start(ctx)
        server_pids = target.pids()
        target.smoke()
        spinners.start()
        for name, layout in LAYOUTS.items():
            place(target, [target], ctx, layout)
            os.sched_setaffinity(0, set(layout.wrk))
            client = Client(target)
            recording = None
            try:
                drive(client, args.warmup)
                if perf is not None and name == "same-core":
                    recording = sched.Recording(perf, work / "sched.data", args.seconds + 0.5)
                t0, samples = drive(client, args.seconds)
            finally:
                client.close()
            rows += describe(name, samples, args.slow / 1e3)
            if name == "same-core":
                same_core = (t0, samples)
            print(rows[-1], flush=True)
            if recording is not None:
                parties = sched.Parties(
                    server=set(target.pids()),
                    mock=set(mock.pids()),
                    client={os.getpid()},
                    idle=set(spinners.pids()),
                )
                slices = recording.slices(layout.server[0])
                ran += attribute(slices, parties, t0, samples, args.slow / 1e3)
                print("\n".join(ran), flush=True)
        done = True
    finally:
        spinners.stop()
        target.stop()
        mock.stop()
        if done and args.writers and same_core is not None:  # written as the server exited
            probed = [work / f"writers-{pid}.json" for pid in server_pids]
            items = [i for path in probed if path.exists() for i in orjson.loads(path.read_bytes())]
            writers = writer_work(items, *same_core, args.slow / 1e3)
            print("\n".join(writers), flush=True)
        # The run's database and logs (tens of MB): kept only when the run failed.
        if done:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"the run's files are kept in {work}", file=sys.stderr)
    date = dt.date.today().isoformat()
    report = [
        f"# When the slow requests come: {target.label}, chat at concurrency 1, {date}",
        "",
        f"`bench/timeline.py`: {args.seconds:g} s per layout after {args.warmup:g} s of warm-up, "
        f"one request at a time. Slow: over {args.slow:g} ms. A burst: slow requests less than "
        f"{BURST_GAP_S * 1e3:.0f} ms apart; its period and length are medians over the bursts "
        "of two or more. `same-core`: server, mock and client on one core (run.py's c = 1 "
        "layout); `own-core`: the server alone on its core. `p99 as wrk counts`: with the "
        "samples wrk adds for coordinated omission (`as_wrk_counts`), as run.py reports it.",
        "",
        "| layout | requests | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 as wrk counts, ms "
        "| slow | slow in bursts | burst period | burst length |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        *(
            [
                "What ran on the server's core during the same-core run's requests (`--sched`: "
                "`perf sched` timelines): ms per request, the mean over the requests of each "
                "group (those inside the trace); `between tasks` is the time the trace gives "
                "to no task.",
                "",
                "| requests | count | latency | " + " | ".join(sched.ROLES) + " | between tasks |",
                "| --- | ---: | ---: | " + " | ".join("---:" for _ in sched.ROLES) + " | ---: |",
                *ran,
                "",
            ]
            if ran
            else []
        ),
        *writers,
        f"Versions: {', '.join(f'{k} {v}' for k, v in machine.versions(None).items())}.",
        "",
    ]
    out = RESULTS / f"timeline-{target.name}-{date}.md"
    out.write_text("\n".join(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
