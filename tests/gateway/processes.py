"""Gateways as separate operating-system processes (`faregate serve`) on one database and one
Redis, for tests of what replicas share. The mock provider stays in the test process, so its
request counter sees every upstream call of every replica."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from faregate.auth import repository
from faregate.auth.service import KeyService
from faregate.store.db import create_engine
from tests.conftest import free_port, migrated
from tests.gateway.conftest import ADMIN_KEY, gateway_config

_SERVE = "import sys; from faregate.cli import main; sys.exit(main())"


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


async def prepare_database(database_url: str, **key: Any) -> str:
    """Migrate, create customer `acme` and one API key (team `research` unless given)."""
    await migrated(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await repository.insert_customer(conn, {"external_id": "acme", "name": "Acme"})
        secret, _ = await KeyService(engine, ADMIN_KEY).create_key(
            name="t", customer_external_id="acme", **({"team": "research"} | key)
        )
    finally:
        await engine.dispose()
    return secret


async def _ready(replica: Replica, timeout_s: float = 30.0) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout_s / 0.05)):
            if replica.process.poll() is not None:
                break
            try:
                async with session.get(f"{replica.url}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"gateway did not start:\n{replica.log.read_text()[-4000:]}")


async def start_replicas(
    tmp_path: Path, database_url: str, mock_url: str, extra: dict[str, Any], count: int = 2
) -> list[Replica]:
    """Start `count` gateway processes with the same configuration (and its own port and
    data directory each); stop them with `stop_replicas`."""
    replicas: list[Replica] = []
    try:
        for i in range(count):
            home = tmp_path / f"replica{i}"
            home.mkdir(parents=True, exist_ok=True)
            port = free_port()
            config = gateway_config(mock_url, extra) | {
                "database_url": database_url,
                "admin_key": ADMIN_KEY,
                "data_dir": str(home),
            }
            config["server"] = {**config.get("server", {}), "port": port, "instance": f"r{i}"}
            (home / "faregate.yaml").write_text(yaml.safe_dump(config))
            log = home / "log.txt"
            env = {k: v for k, v in os.environ.items() if not k.startswith("FAREGATE_")}
            env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _SERVE,
                        "serve",
                        "--config",
                        str(home / "faregate.yaml"),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            replicas.append(Replica(f"http://127.0.0.1:{port}", process, log))
        await asyncio.gather(*(_ready(r) for r in replicas))
    except BaseException:
        await stop_replicas(replicas)
        raise
    return replicas


async def stop_replicas(replicas: list[Replica]) -> None:
    """SIGTERM each replica and wait: a clean stop flushes its usage writer."""
    for r in replicas:
        if r.process.poll() is None:
            r.process.send_signal(signal.SIGTERM)
    for r in replicas:
        try:
            await asyncio.to_thread(r.process.wait, 30)
        except subprocess.TimeoutExpired:
            r.process.kill()
            await asyncio.to_thread(r.process.wait)
