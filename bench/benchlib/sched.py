"""Who ran on the core while a request waited: the kernel's scheduler trace, read back per
request window.

A sampling profiler sees a slow request's event loop waiting in `epoll_wait` or for the
GIL, and not what held the core meanwhile. `perf sched record` logs every context switch
on every core. Each line of `perf sched timehist` is one task switched out, with how long
it had just run, so a request's window [start, end] can be split by the tasks that ran in
it on the server's core: the server's event loop, its other threads (SQLite's connection
threads, the journal's recycling), the mock, the client, the idle loops, anything else.
The trace is recorded with CLOCK_MONOTONIC, the clock of `time.perf_counter()`, so its
times and the client's samples are on one axis.

`perf` is Debian's `linux-perf`, installed with apt-get on first use as wrk is.
"""

from __future__ import annotations

import bisect
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import procs

ROLES = ("server loop", "server threads", "mock", "client", "idle loops", "other")
_TASK = re.compile(r"\[(\d+)(?:/(\d+))?\]$")


def ensure_perf(log: Path) -> str:
    """The perf binary, installed with apt-get (`linux-perf`) if it is missing."""
    return procs.apt_binary("perf", "linux-perf", log)


class Recording:
    """`perf sched record` of every core for `seconds`, started at once in the background;
    `slices()` waits for it, reads the trace back and deletes it."""

    def __init__(self, perf: str, out: Path, seconds: float) -> None:
        self._perf = perf
        self._out = out
        record = [perf, "sched", "record", "-k", "CLOCK_MONOTONIC", "-a", "-o", str(out)]
        self._proc = subprocess.Popen(
            [*record, "--", "sleep", f"{seconds:g}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def slices(self, core: int) -> list[Slice]:
        _, err = self._proc.communicate()
        if self._proc.returncode != 0:
            raise RuntimeError(f"perf sched record failed: {err.decode(errors='replace')[-2000:]}")
        try:
            text = subprocess.run(
                [self._perf, "sched", "timehist", "-i", str(self._out)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        finally:
            self._out.unlink(missing_ok=True)  # ~2 MB of trace a second
        return parse_timehist(text.splitlines(), core)


@dataclass(frozen=True, slots=True)
class Slice:
    """A task's turn on the core: from `start` to `end` (seconds, CLOCK_MONOTONIC)."""

    start: float
    end: float
    tid: int
    pid: int


def parse_timehist(lines: Iterable[str], core: int) -> list[Slice]:
    """The turns on `core`, in order. A line: time, [cpu], task name[tid/pid] (or [pid] for
    a process's first thread), wait time, scheduling delay and run time in ms."""
    wanted = f"[{core:04d}]"
    slices = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != wanted:
            continue
        try:
            end = float(fields[0])
            run_ms = float(fields[-1])
        except ValueError:
            continue  # the header lines
        task = _TASK.search(" ".join(fields[2:-3]))
        if task is None or run_ms <= 0:
            continue  # <idle>
        tid = int(task.group(1))
        pid = int(task.group(2) or tid)
        slices.append(Slice(end - run_ms / 1000, end, tid, pid))
    slices.sort(key=lambda s: s.start)
    return slices


@dataclass
class Ran:
    """What `ran_during` found: the windows inside the trace, their total length, and the
    seconds each role ran on the core within them (all in seconds)."""

    windows: int = 0
    length: float = 0.0
    by_role: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ROLES, 0.0))

    def per_window_ms(self, role: str) -> float:
        return self.by_role[role] / self.windows * 1e3

    def unattributed_ms(self) -> float:
        """Time per window the trace gives to no task (the kernel between tasks)."""
        return (self.length - sum(self.by_role.values())) / self.windows * 1e3


@dataclass
class Parties:
    """Which processes are which."""

    server: set[int]
    mock: set[int]
    client: set[int]
    idle: set[int] = field(default_factory=set)

    def role(self, s: Slice) -> str:
        if s.pid in self.server:
            return "server loop" if s.tid == s.pid else "server threads"
        if s.pid in self.mock:
            return "mock"
        if s.pid in self.client:
            return "client"
        if s.pid in self.idle:
            return "idle loops"
        return "other"


def ran_during(
    slices: Sequence[Slice], parties: Parties, windows: Iterable[tuple[float, float]]
) -> Ran:
    """What ran on the core within the windows. Only windows inside the trace count (perf
    takes a moment to start). Slices are sorted by start and do not overlap (one core), so
    the ones a window meets begin at most one slice before it."""
    ran = Ran()
    if not slices:
        return ran
    starts = [s.start for s in slices]
    first, last = slices[0].start, slices[-1].end
    for begin, end in windows:
        if begin < first or end > last:
            continue
        ran.windows += 1
        ran.length += end - begin
        i = max(0, bisect.bisect_right(starts, begin) - 1)
        while i < len(slices) and slices[i].start < end:
            s = slices[i]
            overlap = min(end, s.end) - max(begin, s.start)
            if overlap > 0:
                ran.by_role[parties.role(s)] += overlap
            i += 1
    return ran
