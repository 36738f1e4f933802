"""Start, pin, watch and stop the processes of a benchmark; read CPU time and memory from /proc.

Every process binds 127.0.0.1 and is stopped by its own process group id, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
# With the kernel's autogroup scheduling every session competes as one group, whatever its
# tasks' nice or policy: the group's own nice is what gives benchmark processes precedence
# over outside work, and what keeps an idle busy loop idle.
BENCH_NICE = -10
SPIN_NICE = 19


def apt_binary(binary: str, package: str, log: Path) -> str:
    """The path of `binary`, installed from Debian's `package` with apt-get if it is missing
    (the package lists refreshed first only when the plain install fails)."""
    found = shutil.which(binary)
    if found:
        return found
    print(f"{binary} not found: installing {package} with apt-get", flush=True)
    with open(log, "ab") as out:
        install = ["apt-get", "install", "-y", package]
        subprocess.run(install, stdout=out, stderr=out, check=False)
        if not shutil.which(binary):
            subprocess.run(["apt-get", "update"], stdout=out, stderr=out, check=False)
            subprocess.run(install, stdout=out, stderr=out, check=True)
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"could not install {binary} ({package}); see {log}")
    return found


def set_group_nice(pid: int, nice: int) -> None:
    """Set the autogroup nice of `pid`'s session (a no-op without autogroup or root)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """A child process started in its own session, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    extra_pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> list[int]:
        """This process, its descendants (workers, if any) and any pids attached to it."""
        return [*tree(self.pid), *self.extra_pids]

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(5)


def start(
    name: str,
    cmd: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cpus: Iterable[int] | None = None,
    cwd: str | Path | None = None,
) -> Proc:
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    set_group_nice(popen.pid, BENCH_NICE)
    proc = Proc(name, popen, log)
    if cpus is not None:
        pin([proc.pid], cpus)
    return proc


def wait_http(url: str, proc: Proc | None = None, timeout: float = 60.0) -> None:
    """Wait until `url` answers any HTTP status; fail early if `proc` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(
        f"{url} did not answer within {timeout:.0f} s" + (f":\n{proc.tail()}" if proc else "")
    )


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """`root` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of `names` (to read, never to signal)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                out.append(int(entry))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of `pids` (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except (OSError, IndexError):
            continue
        total += int(f[11]) + int(f[12])  # fields 14 and 15 of /proc/PID/stat
    return total / CLK_TCK


def memory_kb(pids: Iterable[int]) -> tuple[int, int]:
    """Sum of (VmRSS, VmHWM) over `pids`, in KiB."""
    rss = hwm = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
        except OSError:
            continue
    return rss, hwm


def core_busy() -> dict[int, float]:
    """Per-core busy seconds (everything but idle and iowait) from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            parts = line.split()
            values = [int(v) for v in parts[1:9]]
            busy = sum(values) - values[3] - values[4]
            out[int(parts[0][3:])] = busy / CLK_TCK
    return out


def pin(pids: Iterable[int], cpus: Iterable[int]) -> None:
    """Set the CPU affinity of every thread of every pid."""
    mask = set(cpus)
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


_SPIN = (
    "import os\n"
    "os.sched_setaffinity(0, {%d})\n"
    "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\n"
    "while True:\n    pass\n"
)


class Spinners:
    """One lowest-priority busy loop per core, so no core sleeps between requests.

    A SCHED_IDLE task in a nice-19 session runs only when nothing else wants the core and is
    pre-empted at once; it stops the hypervisor from parking an idle vCPU, whose wake-up costs
    0.1-10 ms here.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for core in range(NCPU):
            p = subprocess.Popen([sys.executable, "-c", _SPIN % core], start_new_session=True)
            set_group_nice(p.pid, SPIN_NICE)
            self.procs.append(p)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        self.procs.clear()

    def __enter__(self) -> Spinners:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
