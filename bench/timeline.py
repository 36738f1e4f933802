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

    python bench/timeline.py                 # 10 s per layout
    python bench/timeline.py --seconds 20 --target faregate-pg
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine, procs
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


def drive(client: Client, seconds: float) -> list[tuple[float, float]]:
    """(start since the first request, latency) of every request, in seconds."""
    samples = []
    t0 = time.perf_counter()
    while (start := time.perf_counter()) - t0 < seconds:
        client.call()
        samples.append((start - t0, time.perf_counter() - start))
    return samples


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per layout (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--slow", type=float, default=2.0, help="ms above which a request is slow")
    parser.add_argument("--target", default="faregate-embedded")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faregate-timeline-"))
    mock, mock_url = machine.start_mock(work, None)
    ctx = Context(work=work, mock_url=mock_url, mock=mock)
    [target] = build([args.target])
    spinners = procs.Spinners()
    rows = []
    try:
        target.start(ctx)
        target.smoke()
        spinners.start()
        for name, layout in LAYOUTS.items():
            place(target, [target], ctx, layout)
            os.sched_setaffinity(0, set(layout.wrk))
            client = Client(target)
            try:
                drive(client, args.warmup)
                samples = drive(client, args.seconds)
            finally:
                client.close()
            rows += describe(name, samples, args.slow / 1e3)
            print(rows[-1], flush=True)
    finally:
        spinners.stop()
        target.stop()
        mock.stop()
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
        f"Versions: {', '.join(f'{k} {v}' for k, v in machine.versions(None).items())}.",
        "",
    ]
    out = RESULTS / f"timeline-{target.name}-{date}.md"
    out.write_text("\n".join(report))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
