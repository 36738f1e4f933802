"""What is measured: the mock itself, the bare pass-through, faregate (two ways), and the peer
gateways LiteLLM, Portkey and TensorZero.

Each target knows how to start on 127.0.0.1, which URL and model a scenario uses, which
processes its CPU time is read from, and how to stop.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from benchlib import procs
from benchlib.faregate_setup import FaregateInstance
from benchlib.scenarios import Scenario

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
CONFIGS = BENCH / "configs"
DEPLOYMENTS = ("fast", "slow50", "paced", "down")


@dataclass
class Context:
    work: Path
    mock_url: str
    mock: procs.Proc
    dev_python: str = sys.executable
    # Put before a Python server's command (`valgrind ... python`, by instructions.py): the
    # server then runs its script with that interpreter, and may take minutes to start.
    wrap: tuple[str, ...] = ()
    faregate_config: Path | None = None  # instead of configs/faregate-embedded.yaml


@dataclass
class Target:
    name: str
    label: str
    auth: str | None = None
    notes: list[str] = field(default_factory=list)
    proc: procs.Proc | None = None
    is_mock: bool = False  # the direct target: the mock is the server
    dropped: list[str] = field(default_factory=list)  # config sections that did not run

    def start(self, ctx: Context) -> None:
        raise NotImplementedError

    def url(self, scenario: Scenario) -> str:
        raise NotImplementedError

    def model(self, scenario: Scenario) -> str:
        return scenario.model_name

    def body_extra(self, scenario: Scenario) -> dict[str, object] | None:
        """Fields this target needs in the scenario's body beside the common ones."""
        return None

    def headers(self, scenario: Scenario) -> dict[str, str]:
        """Request headers this target needs beside Content-Type and the bearer key."""
        return {}

    def pids(self) -> list[int]:
        return self.proc.pids() if self.proc else []

    def service_pids(self) -> list[int]:
        """Shared services the target leans on (PostgreSQL, Redis): read, never pinned."""
        return []

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def stored(self) -> int | None:
        """Request records the target has stored so far (None: it stores none)."""
        return None

    def smoke(self) -> None:
        """One non-streaming and one streaming request must come back whole."""
        from benchlib.scenarios import SCENARIOS

        for scenario in (SCENARIOS[0], SCENARIOS[2]):
            status, body = post(
                self.url(scenario),
                scenario.body(self.model(scenario), self.body_extra(scenario)),
                self.auth,
                self.headers(scenario),
            )
            if status != 200:
                raise RuntimeError(f"{self.name}: smoke request answered {status}: {body[:500]!r}")
            if scenario.stream:
                ok = b"[DONE]" in body and b"chat.completion.chunk" in body
            else:
                ok = bool(orjson.loads(body).get("choices"))
            if not ok:
                raise RuntimeError(f"{self.name}: malformed smoke reply: {body[:500]!r}")


def post(
    url: str,
    body: str,
    auth: str | None,
    extra_headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Direct(Target):
    def __init__(self) -> None:
        super().__init__("direct", "direct to the mock", is_mock=True)
        self.ctx: Context | None = None

    def start(self, ctx: Context) -> None:
        self.ctx = ctx

    def url(self, scenario: Scenario) -> str:
        assert self.ctx
        return f"{self.ctx.mock_url}/d/{scenario.deployment}/v1/chat/completions"

    def model(self, scenario: Scenario) -> str:
        return "mock-small"

    def pids(self) -> list[int]:
        return self.ctx.mock.pids() if self.ctx else []

    def stop(self) -> None:
        pass


class Passthrough(Target):
    def __init__(self) -> None:
        super().__init__("passthrough", "bare pass-through (aiohttp)")
        self.port = 0

    def start(self, ctx: Context) -> None:
        self.port = procs.free_port()
        self.proc = procs.start(
            self.name,
            [
                *(ctx.wrap or (ctx.dev_python,)),
                str(BENCH / "passthrough.py"),
                "--port",
                str(self.port),
                "--upstream",
                ctx.mock_url,
            ],
            ctx.work / "logs" / "passthrough.log",
        )
        procs.wait_http(
            f"http://127.0.0.1:{self.port}/healthz", self.proc, timeout=600 if ctx.wrap else 60
        )

    def url(self, scenario: Scenario) -> str:
        return f"http://127.0.0.1:{self.port}/d/{scenario.deployment}/v1/chat/completions"

    def model(self, scenario: Scenario) -> str:
        return "mock-small"


LITELLM_VENV = BENCH / ".venv-litellm"


def ensure_venv(venv: Path, packages: list[str], log: Path) -> Path:
    """A virtualenv of its own for a peer, with `packages` installed; its Python. An install
    cut short is begun again on the next run (the marker is written last)."""
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python
    print(f"installing {packages[0]} into bench/{venv.name} (first run only)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    with open(log, "ab") as out:
        subprocess.run([base, "-m", "venv", str(venv)], stdout=out, stderr=out, check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], stdout=out, stderr=out, check=False)
        subprocess.run([*pip, *packages], stdout=out, stderr=out, check=True)
    marker.write_text(" ".join(packages) + "\n")
    return python


def venv_version(venv: Path, dist: str) -> str | None:
    """The version of `dist` installed in a peer's virtualenv, if it is installed."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m;print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or None


def ensure_litellm(log: Path) -> Path:
    """LiteLLM's proxy in its own virtualenv, with the extras it needs to run at its best."""
    ensure_venv(LITELLM_VENV, ["litellm[proxy]", "httptools", "opentelemetry-sdk"], log)
    return LITELLM_VENV / "bin" / "litellm"


def litellm_version() -> str | None:
    return venv_version(LITELLM_VENV, "litellm")


class LiteLLM(Target):
    def __init__(self) -> None:
        super().__init__("litellm", "LiteLLM proxy (1 worker, no DB)")
        self.port = 0

    def start(self, ctx: Context) -> None:
        exe = ensure_litellm(ctx.work / "logs" / "litellm-install.log")
        self.port = procs.free_port()
        self.auth = "sk-bench-" + secrets.token_urlsafe(24)
        env = {f"BENCH_MOCK_{d.upper()}": f"{ctx.mock_url}/d/{d}/v1" for d in DEPLOYMENTS}
        env.update(
            LITELLM_MASTER_KEY=self.auth, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR"
        )
        self.proc = procs.start(
            self.name,
            [
                str(exe),
                "--config",
                str(CONFIGS / "litellm.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--num_workers",
                "1",
                "--log_config",
                str(CONFIGS / "litellm-logging.json"),
            ],
            ctx.work / "logs" / "litellm.log",
            env=env,
        )
        procs.wait_http(f"http://127.0.0.1:{self.port}/health/liveliness", self.proc, timeout=180)

    def url(self, scenario: Scenario) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def body_extra(self, scenario: Scenario) -> dict[str, object] | None:
        """LiteLLM's cache is opt-in per request here (`mode: default_off` in
        configs/litellm.yaml), so that only the cache cell is served from it."""
        return {"cache": {"use-cache": True}} if scenario.cached else None


PORTKEY_DIR = BENCH / "portkey"
PORTKEY_SERVER = (
    PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)


def ensure_portkey(log: Path) -> Path:
    """Portkey's gateway from the npm registry, at the version bench/portkey's lock file pins,
    with Node.js and npm from Debian's packages if the machine has none."""
    marker = PORTKEY_DIR / "node_modules" / ".installed"  # written last, as `ensure_venv`'s
    if marker.exists():
        return PORTKEY_SERVER
    procs.apt_binary("node", "nodejs", log)
    npm = procs.apt_binary("npm", "npm", log)
    print("installing @portkey-ai/gateway into bench/portkey (first run only)", flush=True)
    with open(log, "ab") as out:
        # No install scripts: the package's own (patch-package) patches its sources, which
        # the published build does not ship.
        subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=PORTKEY_DIR,
            stdout=out,
            stderr=out,
            check=True,
        )
    marker.write_text("npm ci\n")
    return PORTKEY_SERVER


def portkey_versions() -> dict[str, str]:
    """Portkey's gateway and the Node.js it runs on, where installed."""
    out: dict[str, str] = {}
    package = PORTKEY_SERVER.parent.parent / "package.json"
    if package.exists():
        out["Portkey gateway"] = json.loads(package.read_text())["version"]
        node = shutil.which("node")
        if node:
            done = subprocess.run([node, "--version"], capture_output=True, text=True)
            out["Node.js"] = done.stdout.strip().removeprefix("v")
    return out


class Portkey(Target):
    """Portkey's open-source gateway (`@portkey-ai/gateway`) on Node.js, one process, no
    database, routing each request to the mock by its headers as its docs show for an
    OpenAI-compatible host (`x-portkey-provider: openai`, `x-portkey-custom-host`).
    bench/portkey/local.mjs keeps it on 127.0.0.1 and works around its open bug with streams
    on Node's fetch. Its open-source build has no response cache: in the cache cell every
    request reaches the upstream, as `upstream / req` shows."""

    def __init__(self) -> None:
        super().__init__("portkey", "Portkey gateway (Node.js, no DB)")
        self.port = 0
        self.mock_url = ""

    def start(self, ctx: Context) -> None:
        server = ensure_portkey(ctx.work / "logs" / "portkey-install.log")
        self.port = procs.free_port()
        self.mock_url = ctx.mock_url
        # A provider key is required by the gateway's checks; the mock reads none.
        self.auth = "sk-bench-" + secrets.token_urlsafe(24)
        self.proc = procs.start(
            self.name,
            [
                shutil.which("node") or "node",
                "--import",
                str(PORTKEY_DIR / "local.mjs"),
                str(server),
                f"--port={self.port}",
                "--headless",
            ],
            ctx.work / "logs" / "portkey.log",
            env={"NODE_ENV": "production"},
        )
        procs.wait_http(f"http://127.0.0.1:{self.port}/", self.proc, timeout=60)

    def url(self, scenario: Scenario) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def model(self, scenario: Scenario) -> str:
        return "mock-small"

    def headers(self, scenario: Scenario) -> dict[str, str]:
        if scenario.failover:  # its fallback strategy, in the config header it documents
            targets = [
                {
                    "provider": "openai",
                    "api_key": self.auth,
                    "custom_host": f"{self.mock_url}/d/{d}/v1",
                }
                for d in ("down", scenario.deployment)
            ]
            config = {"strategy": {"mode": "fallback"}, "targets": targets}
            return {"x-portkey-config": json.dumps(config, separators=(",", ":"))}
        return {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"{self.mock_url}/d/{scenario.deployment}/v1",
        }


TENSORZERO_VENV = BENCH / ".venv-tensorzero"


def ensure_tensorzero(log: Path) -> Path:
    """TensorZero's Python package, which carries its gateway, in its own virtualenv."""
    return ensure_venv(TENSORZERO_VENV, ["tensorzero"], log)


def tensorzero_version() -> str | None:
    return venv_version(TENSORZERO_VENV, "tensorzero")


class TensorZero(Target):
    """TensorZero's gateway (Rust) as the `tensorzero` package runs it, on its
    OpenAI-compatible endpoint (`tensorzero::model_name::<model>`), observability off (it
    would need ClickHouse), no database (bench/tensorzero_gateway.py)."""

    def __init__(self) -> None:
        super().__init__("tensorzero", "TensorZero gateway (Rust, no DB)")
        self.base_url = ""

    def start(self, ctx: Context) -> None:
        python = ensure_tensorzero(ctx.work / "logs" / "tensorzero-install.log")
        log = ctx.work / "logs" / "tensorzero.log"
        self.proc = procs.start(
            self.name,
            [
                str(python),
                str(BENCH / "tensorzero_gateway.py"),
                "--upstream",
                ctx.mock_url,
                "--config",
                str(ctx.work / "tensorzero.toml"),
            ],
            log,
            env={"RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 120
        while not self.base_url:
            if not self.proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"tensorzero did not start:\n{self.proc.tail()}")
            line = next(
                (
                    x
                    for x in log.read_text(errors="replace").splitlines()
                    if x.startswith("BASE_URL ")
                ),
                None,
            )
            if line:
                self.base_url = line.split(" ", 1)[1].strip().rstrip("/")
            else:
                time.sleep(0.2)

    def url(self, scenario: Scenario) -> str:
        return f"{self.base_url}/chat/completions"

    def model(self, scenario: Scenario) -> str:
        return f"tensorzero::model_name::{scenario.model_name}"


FAREGATE_BACKENDS = {  # name: (label, PostgreSQL, Redis)
    "faregate-embedded": ("faregate embedded (SQLite)", False, False),
    "faregate-pg": ("faregate, PostgreSQL", True, False),
    "faregate-pg-redis": ("faregate, PostgreSQL + Redis", True, True),
}
NO_WALLET = "-nowallet"


class Faregate(Target):
    """`faregate serve` with the whole pipeline on, embedded (SQLite), on PostgreSQL, or on
    PostgreSQL + Redis. The `-nowallet` variants serve a customer without a prepaid wallet,
    so the difference to their twin is what the wallet hold and settle cost."""

    def __init__(self, name: str) -> None:
        base = name.removesuffix(NO_WALLET)
        label, distributed, redis = FAREGATE_BACKENDS[base]
        self.wallet = not name.endswith(NO_WALLET)
        super().__init__(name, label if self.wallet else f"{label}, no wallet")
        self.distributed = distributed
        self.redis = redis
        self.instance: FaregateInstance | None = None

    def start(self, ctx: Context) -> None:
        self.instance = FaregateInstance(
            self.name,
            ctx.work,
            ctx.mock_url,
            distributed=self.distributed,
            redis=self.redis,
            wallet=self.wallet,
            **({"config": ctx.faregate_config} if ctx.faregate_config else {}),
        )
        self.instance.prepare()
        self.instance.serve(wrap=ctx.wrap)
        self.proc = self.instance.proc
        self.auth = self.instance.key
        self.dropped = self.instance.dropped
        self.notes.extend(self.instance.notes)

    def url(self, scenario: Scenario) -> str:
        assert self.instance
        return f"{self.instance.base_url}/v1/chat/completions"

    def stored(self) -> int | None:
        assert self.instance
        return self.instance.count()

    def service_pids(self) -> list[int]:
        if not self.distributed:
            return []
        return procs.pids_named("postgres", *(["redis-server"] if self.redis else []))

    def stop(self) -> None:
        if self.instance:
            self.instance.close()


def build(names: list[str]) -> list[Target]:
    makers = {
        "direct": Direct,
        "passthrough": Passthrough,
        "litellm": LiteLLM,
        "portkey": Portkey,
        "tensorzero": TensorZero,
    }
    for base in FAREGATE_BACKENDS:
        for name in (base, base + NO_WALLET):
            makers[name] = lambda name=name: Faregate(name)  # type: ignore[misc]
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise SystemExit(f"unknown targets {unknown}; choose from {list(makers)}")
    return [makers[n]() for n in names]  # type: ignore[operator]
