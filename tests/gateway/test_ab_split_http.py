"""An A/B split of 10,000 requests from 10,000 distinct users through a running gateway (real
HTTP on loopback, a pooled client, the mock provider upstream): the split lands within 2
percentage points of its target, a sample of users asked again stays on its arm, and the
stored experiment report adds up to what the clients saw (requests, tokens and cost per arm)."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.routing.ab_split import bucket
from tests.gateway.conftest import ADMIN_KEY, start_gateway
from tests.gateway.test_routing_choices import _ab_config

# Sticky ids: one fresh random `user` per request, so the split is judged on ids nobody
# chose. 30 % of 10,000 independent draws has a standard deviation of 0.46 points: 2 points
# is over four of them. Gateway, mock and client share this process (SQLite request
# records included): the 10,500 requests took 34 s (3.2 ms each) on a 2-core machine with a
# load average of 6, so less when it is idle. FAREGATE_TEST_AB_USERS=2000 for a quick run.
USERS = int(os.environ.get("FAREGATE_TEST_AB_USERS", "10000"))
SAMPLE = 500  # users asked a second time: each must land on the arm it had
CONCURRENCY = 64
TARGET_A = 0.30
ARM_OF = {"ab-a": "a", "ab-b": "b"}


@pytest.mark.timeout(300)
async def test_requests_over_http_split_within_two_points_sticky_per_user_and_reported(
    tmp_path: Path, mock: MockServer
) -> None:
    config = _ab_config(mock.url)
    config["models"][0]["sticky"] = "user"
    gateway = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ab.db'}", mock, config
    )
    users = [f"user-{uuid.uuid4().hex}" for _ in range(USERS)]
    served: dict[str, str] = {}
    seen: dict[str, dict[str, Any]] = {
        arm: {"requests": 0, "input": 0, "output": 0, "cost": Decimal(0)} for arm in ("a", "b")
    }
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY)
        headers = {"Authorization": f"Bearer {gateway.key}"}
        async with aiohttp.ClientSession(connector=connector, headers=headers) as s:

            async def ask(user: str) -> str:
                body = {
                    "model": "ab",
                    "user": user,
                    "max_tokens": 1,
                    "messages": [{"role": "user", "content": "hi"}],
                }
                async with s.post(f"{gateway.url}/v1/chat/completions", json=body) as r:
                    assert r.status == 200, await r.text()
                    usage = (await r.json())["usage"]
                    deployment = r.headers["x-faregate-deployment"]
                    cost = Decimal(r.headers["x-faregate-cost"])
                arm = seen[ARM_OF[deployment]]
                arm["requests"] += 1
                arm["input"] += usage["prompt_tokens"]
                arm["output"] += usage["completion_tokens"]
                arm["cost"] += cost
                return deployment

            async def worker(jobs: Any, out: dict[str, str]) -> None:
                for user in jobs:
                    out[user] = await ask(user)

            started = time.monotonic()
            jobs = iter(users)
            await asyncio.gather(*(worker(jobs, served) for _ in range(CONCURRENCY)))
            share_a = sum(1 for d in served.values() if d == "ab-a") / USERS
            again: dict[str, str] = {}
            sample = iter(random.sample(users, SAMPLE))
            await asyncio.gather(*(worker(sample, again) for _ in range(CONCURRENCY)))
            elapsed = time.monotonic() - started

            total = USERS + SAMPLE
            assert len(served) == USERS and mock.stats.requests == total
            assert abs(share_a - TARGET_A) <= 0.02, share_a
            assert all(again[user] == served[user] for user in again)  # sticky
            assert {ARM_OF[d] for d in again.values()} == {"a", "b"}

            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            for _ in range(200):  # stored records arrive through the batched writer
                async with s.get(f"{gateway.url}/api/v1/experiments/exp-1", headers=admin) as r:
                    assert r.status == 200, await r.text()
                    report = await r.json()
                if sum(row["requests"] for row in report["arms"]) == total:
                    break
                await asyncio.sleep(0.05)
    finally:
        await gateway.runner.cleanup()

    rows = {row["arm"]: row for row in report["arms"]}
    for name, arm in seen.items():
        row = rows[name]
        assert (row["requests"], row["errors"]) == (arm["requests"], 0)
        assert (row["input_tokens"], row["output_tokens"]) == (arm["input"], arm["output"])
        # $1 / $4 per 1M tokens on both arms: the report, the headers and the arithmetic agree.
        assert Decimal(row["cost"]) == arm["cost"]
        assert arm["cost"] == (Decimal(arm["input"]) + 4 * Decimal(arm["output"])) / 10**6
    print(f"{total} requests over HTTP in {elapsed:.1f} s ({share_a:.4f} on arm a)")


async def test_a_request_that_fails_everywhere_is_an_error_of_the_arm_it_was_assigned(
    tmp_path: Path, mock: MockServer
) -> None:
    # A user of arm a: first a fails (b serves, and a's breaker opens), then b fails too
    # (a's breaker still open: the plan is b alone), then b's breaker opens as well (no
    # deployment left: 503 before any call). Only what b served is b's; every error is a's.
    config = _ab_config(mock.url)
    config["models"][0]["sticky"] = "user"
    config["routing"] = {"max_attempts": 2, "breaker": {"failure_threshold": 2}}
    user = next(f"user-{n}" for n in range(1000) if bucket("exp-1", f"user-{n}") < 3000)
    gateway = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ab.db'}", mock, config
    )
    body = {"model": "ab", "user": user, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    answers: list[tuple[int, str, str]] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {gateway.key}"}) as s:

            async def ask(times: int) -> None:
                for _ in range(times):
                    async with s.post(f"{gateway.url}/v1/chat/completions", json=body) as r:
                        code = "" if r.status == 200 else (await r.json())["error"]["code"]
                        answers.append((r.status, code, r.headers["x-faregate-attempts"]))

            mock.config.deployments["ab-a"] = MockBehaviour(error_rate=1.0)
            await ask(2)
            mock.config.deployments["ab-b"] = MockBehaviour(error_rate=1.0)
            await ask(4)
            report = await _stored_report(s, gateway.url, "exp-1", total=6)
    finally:
        await gateway.runner.cleanup()

    assert answers == [
        (200, "", "2"),
        (200, "", "2"),
        (502, "upstream_error", "2"),  # b alone, called twice
        (502, "upstream_error", "1"),  # its failure opened b's breaker: no retry
        (503, "no_healthy_deployment", "0"),
        (503, "no_healthy_deployment", "0"),
    ]
    rows = {row["arm"]: (row["requests"], row["errors"]) for row in report["arms"]}
    assert rows == {"a": (4, 4), "b": (2, 0)}


async def _stored_report(
    s: aiohttp.ClientSession, url: str, experiment: str, *, total: int
) -> dict[str, Any]:
    """The stored report once `total` requests reached it (records come in batches)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for _ in range(200):
        async with s.get(f"{url}/api/v1/experiments/{experiment}", headers=admin) as r:
            assert r.status == 200, await r.text()
            report: dict[str, Any] = await r.json()
        if sum(row["requests"] for row in report["arms"]) == total:
            break
        await asyncio.sleep(0.05)
    return report
