"""What the figures were measured on: machine, versions, and the shared mock provider."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import procs
from benchlib.faregate_setup import faregate_exe

BENCH = Path(__file__).resolve().parent.parent
MOCK_CONFIG = BENCH / "configs" / "mock.yaml"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=BENCH, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def versions(litellm: str | None, peers: dict[str, str] | None = None) -> dict[str, str]:
    try:  # ingest.py and usage.py do not need wrk: its version is "not installed" then
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        wrk_text = wrk.stdout or wrk.stderr
    except FileNotFoundError:
        wrk_text = "wrk not installed"
    wrk_line = wrk_text.splitlines()[0] if wrk_text else "?"
    out = {
        "faregate": f"{_version('faregate')} ({git_revision()})",
        "Python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "orjson": _version("orjson"),
        "wrk": wrk_line.split(" [")[0].replace("wrk ", ""),
    }
    if litellm:
        out["LiteLLM"] = litellm
    out.update(peers or {})
    return out


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def start_mock(work: Path, mock_cmd: str | None = None) -> tuple[procs.Proc, str]:
    """The mock provider on a free port, with the benchmark's deployments."""
    port = procs.free_port()
    if mock_cmd:
        cmd = shlex.split(mock_cmd.format(port=port, config=MOCK_CONFIG, python=sys.executable))
    else:
        cmd = [
            faregate_exe(),
            "mock-provider",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--config",
            str(MOCK_CONFIG),
        ]
    proc = procs.start("mock", cmd, work / "logs" / "mock.log", cpus=[0])
    url = f"http://127.0.0.1:{port}"
    procs.wait_http(f"{url}/healthz", proc, timeout=30)
    return proc, url
