"""One faregate server for a benchmark: a fresh database, a customer with a key, `faregate serve`.

Embedded: a SQLite file under bench/work/. Distributed: a PostgreSQL database created for the
run and dropped after it, plus Redis. If the server refuses a configuration section this
build does not support yet, it is started again without the optional sections, and a note
says so; the figures then cover the pipeline that actually ran.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from benchlib import procs

BENCH = Path(__file__).resolve().parent.parent
CONFIG = BENCH / "configs" / "faregate-embedded.yaml"
CORE_SECTIONS = ("server", "providers", "models", "currency", "cache")
PSQL = ["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
REDIS_URL = "redis://127.0.0.1:6379/0"
CUSTOMER = "bench-customer"
SUBSCRIPTION = "bench-subscription"


def explain(err: BaseException | str, limit: int = 300) -> str:
    """The telling line of a failure: the last exception line of a traceback, else the last
    line naming an error, else the last line."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
    named = [ln for ln in lines if "rror" in ln and not ln.startswith("(Background")]
    return ((raised or named or lines or ["unknown failure"])[-1])[:limit]


def faregate_exe() -> str:
    exe = Path(sys.executable).with_name("faregate")
    return str(exe) if exe.exists() else "faregate"


def psql(sql: str, database: str = "test") -> str:
    out = subprocess.run([*PSQL, "-d", database, "-qtAc", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}")
    return out.stdout.strip()


class FaregateInstance:
    def __init__(
        self,
        name: str,
        work: Path,
        mock_url: str,
        *,
        distributed: bool = False,
        redis: bool | None = None,
        wallet: bool = True,
        config: Path = CONFIG,
    ) -> None:
        self.name = name
        self.work = work
        self.distributed = distributed
        self.redis = distributed if redis is None else redis
        self.wallet = wallet  # False: the customer has no wallet, so no request is held
        self.config = config
        self.data_dir = work / name
        self.port = procs.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_key = "fg_admin_bench_" + secrets.token_urlsafe(18)
        self.key: str | None = None
        self.proc: procs.Proc | None = None
        self.notes: list[str] = []
        self.sections: list[str] = []
        self.dropped: list[str] = []  # configuration sections the server refused
        self.pg_database: str | None = None
        if distributed:
            self.pg_database = f"faregate_bench_{os.getpid()}_{name.replace('-', '_')}"
            self.database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.pg_database}"
        else:
            self.sqlite_path = self.data_dir / "faregate.db"
            self.database_url = f"sqlite+aiosqlite:///{self.sqlite_path}"
        self.env = {
            "FAREGATE_DATABASE_URL": self.database_url,
            "FAREGATE_ADMIN_KEY": self.admin_key,
            "FAREGATE_DATA_DIR": str(self.data_dir),
            "FAREGATE_LOG_LEVEL": "warning",
            "BENCH_MOCK_URL": mock_url,
            "BENCH_MOCK_KEY": "bench-upstream-key",
        }
        if self.redis:
            self.env["FAREGATE_REDIS_URL"] = REDIS_URL
            self.env["BENCH_REDIS_PREFIX"] = f"fgbench:{os.getpid()}:{name}:"

    # -- preparing the database ---------------------------------------------------------

    def cli(self, *args: str, config: Path | None = None, check: bool = True) -> dict[str, Any]:
        cmd = [faregate_exe(), *args, "--config", str(config or self.config)]
        out = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=120
        )
        if out.returncode != 0:
            if check:
                raise RuntimeError(f"{' '.join(cmd[1:3])} failed: {out.stderr.strip()[-1500:]}")
            return {"error": out.stderr.strip()[-500:]}
        try:
            return dict(orjson.loads(out.stdout)) if out.stdout.strip().startswith("{") else {}
        except orjson.JSONDecodeError:
            return {}

    def prepare(self) -> None:
        """A fresh database with the schema, one customer, its wallet and budget, one key."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.distributed:
            assert self.pg_database
            psql(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
            psql(f'CREATE DATABASE "{self.pg_database}"')
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)
        self.cli("migrate")
        self.cli("customers", "create", CUSTOMER, "--name", "Benchmark customer")
        self._optional_setup()
        created = self.cli(
            "keys",
            "create",
            "--customer",
            CUSTOMER,
            "--name",
            "bench",
            "--subscription",
            SUBSCRIPTION,
        )
        self.key = str(created["key"])

    def _optional_setup(self) -> None:
        """Wallet credit, through whichever commands this build has."""
        steps = []
        if self.wallet:
            steps.append(
                (
                    "wallet with credit",
                    ["wallets", "create", "--customer", CUSTOMER, "--credits", "1000000"],
                )
            )
        for what, args in steps:
            if not self._has_command(args[0]):
                self.notes.append(f"{what}: `faregate {args[0]}` not in this build; skipped")
                continue
            result = self.cli(*args, check=False)
            if "error" in result:
                self.notes.append(f"{what}: {result['error'].splitlines()[-1]}")

    def _has_command(self, name: str) -> bool:
        out = subprocess.run([faregate_exe(), "--help"], capture_output=True, text=True)
        return f"{name}" in out.stdout.split("positional arguments")[0]

    # -- serving ------------------------------------------------------------------------

    def serve(self, cpus: list[int] | None = None, wrap: Sequence[str] = ()) -> None:
        """Start with the full configuration. If the server refuses it, try again without one
        optional section at a time (last first), then without all of them, and say so.
        `wrap`: an interpreter command (`valgrind ... python`) to run the server's script."""
        raw = yaml.safe_load(self.config.read_text()) or {}
        optional = [k for k in raw if k not in CORE_SECTIONS]
        attempts = [[], *([s] for s in reversed(optional)), optional]
        failures: list[str] = []
        for dropped in attempts:
            config = self.config
            if dropped:
                config = self.work / f"{self.name}-without-{'-'.join(dropped)}.yaml"
                kept = {k: v for k, v in raw.items() if k not in dropped}
                config.write_text(yaml.safe_dump(kept, sort_keys=False))
            try:
                self._start(config, cpus, wrap)
            except RuntimeError as err:
                failures.append(f"{self._server_error() or explain(err)}")
                if self.proc:
                    self.proc.stop()
                continue
            if dropped:
                self.notes.append(
                    f"the full configuration failed ({failures[0]}); measured without "
                    f"section(s) {dropped}, so that part of the pipeline did not run"
                )
            self.sections = [k for k in raw if k not in dropped]
            self.dropped = list(dropped)
            return
        raise RuntimeError(f"faregate would not serve: {failures[-1]}")

    def _server_error(self) -> str | None:
        """The last exception the server logged (its log lines are JSON with an `exc`)."""
        if not self.proc:
            return None
        for line in reversed(self.proc.tail(200).splitlines()):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("exc"):
                return explain(str(entry["exc"]))
        return None

    @staticmethod
    def _config_sections(path: Path) -> list[str]:
        return list((yaml.safe_load(path.read_text()) or {}).keys())

    def _start(self, config: Path, cpus: list[int] | None, wrap: Sequence[str] = ()) -> None:
        log = self.work / "logs" / f"{self.name}.log"
        self.proc = procs.start(
            self.name,
            [
                *wrap,
                faregate_exe(),
                "serve",
                "--config",
                str(config),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            log,
            env=self.env,
            cpus=cpus,
        )
        procs.wait_http(f"{self.base_url}/healthz", self.proc, timeout=600 if wrap else 60)
        from benchlib.targets import post

        body = orjson.dumps(
            {
                "model": "bench-fast",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "ping"}],
            }
        ).decode()
        status, reply = post(
            f"{self.base_url}/v1/chat/completions", body, self.key, timeout=300 if wrap else 30
        )
        if status != 200:
            raise RuntimeError(f"smoke request answered {status}: {reply[:300]!r}")

    # -- the admin API --------------------------------------------------------------------

    def admin_post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST to the running server with the admin (organization) key."""
        from benchlib.targets import post

        return post(self.base_url + path, orjson.dumps(body).decode(), self.admin_key)

    def billing_setup(self, metric_code: str) -> None:
        """A billable metric, a plan charging for it and the key's subscription, through the
        Lago-shaped API, so that events for SUBSCRIPTION are accepted. Failures become notes."""
        plan = "bench_plan"
        steps = [
            (
                "/api/v1/billable_metrics",
                {
                    "billable_metric": {
                        "code": metric_code,
                        "name": "Benchmark tokens",
                        "aggregation_type": "sum_agg",
                        "field_name": "output_tokens",
                    }
                },
            ),
            (
                "/api/v1/plans",
                {
                    "plan": {
                        "code": plan,
                        "name": "Benchmark plan",
                        "interval": "monthly",
                        "amount_cents": 0,
                        "amount_currency": "USD",
                        "charges": [
                            {
                                "billable_metric_code": metric_code,
                                "charge_model": "standard",
                                "properties": {"amount": "0.00001"},
                            }
                        ],
                    }
                },
            ),
            ("/api/v1/customers", {"customer": {"external_id": CUSTOMER}}),
            (
                "/api/v1/subscriptions",
                {
                    "subscription": {
                        "external_id": SUBSCRIPTION,
                        "external_customer_id": CUSTOMER,
                        "plan_code": plan,
                    }
                },
            ),
        ]
        for path, body in steps:
            status, reply = self.admin_post(path, body)
            if not 200 <= status < 300:
                self.notes.append(f"billing setup: {path} answered {status}: {reply[:200]!r}")

    # -- reading back -------------------------------------------------------------------

    def count(self, table: str = "requests", where: str = "") -> int:
        sql = f"SELECT count(*) FROM {table} {where}"
        if self.distributed:
            assert self.pg_database
            return int(psql(sql, self.pg_database))
        with sqlite3.connect(self.sqlite_path) as conn:
            return int(conn.execute(sql).fetchone()[0])

    def close(self) -> None:
        if self.proc:
            self.proc.stop()
        if self.redis:
            self._drop_redis_keys()
        if self.distributed and self.pg_database:
            try:
                psql(f'DROP DATABASE IF EXISTS "{self.pg_database}" WITH (FORCE)')
            except RuntimeError as err:
                print(f"warning: could not drop {self.pg_database}: {err}", file=sys.stderr)

    def _drop_redis_keys(self) -> None:
        """Delete the keys of this instance's Redis prefix (holds, counters, health)."""
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.env['BENCH_REDIS_PREFIX']}*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)
        except redis.RedisError as err:
            print(f"warning: could not delete {self.name}'s Redis keys: {err}", file=sys.stderr)
        finally:
            client.close()
