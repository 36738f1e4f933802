"""Run wrk once with a Lua script and read back its figures and its own CPU time.

wrk is the load generator: one thread, `connections` keep-alive connections, a bounded
duration, a per-request timeout. Its CPU time comes from the kernel's rusage of the child.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchlib.procs import BENCH_NICE, apt_binary, set_group_nice

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    cpu_seconds: float  # wrk's own user + system time
    wall_seconds: float
    extra: dict[str, object]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def ensure_wrk(log: Path) -> str:
    """The wrk binary, installed with apt-get if it is missing."""
    return apt_binary("wrk", "wrk", log)


def run_wrk(
    url: str,
    *,
    script: str = "chat.lua",
    env: dict[str, str],
    connections: int,
    duration: float,
    cpus: Iterable[int],
    timeout: float = 30.0,
    wrk: str = "wrk",
) -> WrkResult:
    """Run wrk against `url` (127.0.0.1 only) pinned to `cpus`; parse its BENCH_JSON line."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark only targets 127.0.0.1")
    cmd = [
        "taskset",
        "-c",
        ",".join(map(str, cpus)),
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(LUA_DIR / script),
        url,
    ]
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        popen = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        set_group_nice(popen.pid, BENCH_NICE)
        _, status, usage = os.wait4(popen.pid, 0)
        popen.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if popen.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({popen.returncode}): {text[-2000:]}")
    data = json.loads(line[len("BENCH_JSON ") :])
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors={k: int(v) for k, v in data["errors"].items()},
        latency_us={k: float(v) for k, v in data["latency_us"].items()},
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        wall_seconds=wall,
        extra={
            k: v
            for k, v in data.items()
            if k not in ("requests", "duration_us", "errors", "latency_us")
        },
    )
