"""Settling a call's stages: every `after` starts, latest stage first; the ones that wait
wait together, so on Redis a request's settles travel in one round trip; one stage failing
never keeps another from settling."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from faregate.gateway.call import Call
from faregate.gateway.policy_stages import RateLimitStage
from faregate.gateway.stages import StageRun
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import log_lines, start_gateway


def _call() -> Call:
    return Call(request_id="req_settle", principal=None, kind="chat", model="m", body={})  # type: ignore[arg-type]


class Recording:
    """A stage that logs its steps to `log`; its `after` waits for `gate` when given one,
    and raises `fails` (before or after the wait) when given one."""

    def __init__(
        self,
        name: str,
        log: list[str],
        gate: asyncio.Event | None = None,
        fails: str | None = None,
    ) -> None:
        self.name = name
        self._log = log
        self._gate = gate
        self._fails = fails

    async def before(self, call: Call) -> None:
        self._log.append(f"{self.name}.before")

    async def after(self, call: Call) -> None:
        self._log.append(f"{self.name}.after started")
        if self._fails == "at once":
            raise RuntimeError(f"{self.name} broke")
        if self._gate is not None:
            await self._gate.wait()
        if self._fails == "after waiting":
            raise RuntimeError(f"{self.name} broke")
        self._log.append(f"{self.name}.after done")


async def test_afters_that_do_not_wait_run_latest_stage_first() -> None:
    log: list[str] = []
    run = StageRun([Recording(n, log) for n in ("a", "b", "c")])
    call = _call()
    await run.enter(call)
    await run.exit(call)
    assert log[3:] == [
        "c.after started",
        "c.after done",
        "b.after started",
        "b.after done",
        "a.after started",
        "a.after done",
    ]


async def test_afters_that_wait_all_start_before_any_finishes() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    run = StageRun([Recording(n, log, gate) for n in ("a", "b", "c")])
    call = _call()
    await run.enter(call)
    exiting = asyncio.ensure_future(run.exit(call))
    await asyncio.sleep(0.01)
    assert log[3:] == ["c.after started", "b.after started", "a.after started"]
    assert not exiting.done()  # exit waits for every stage
    gate.set()
    await exiting
    assert sorted(log[6:]) == ["a.after done", "b.after done", "c.after done"]


async def test_a_cancelled_exit_closes_the_stages_it_had_not_resumed() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    closed: list[str] = []

    class Closing(Recording):
        async def after(self, call: Call) -> None:
            try:
                await super().after(call)
            except GeneratorExit:
                closed.append(self.name)
                raise

    run = StageRun([Closing(n, log, gate) for n in ("a", "b")])
    call = _call()
    await run.enter(call)
    exiting = asyncio.ensure_future(run.exit(call))
    await asyncio.sleep(0.01)
    exiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await exiting
    # b (the later stage) was being awaited and got the cancellation; a was closed.
    assert log[2:] == ["b.after started", "a.after started"] and closed == ["a"]


async def test_only_entered_stages_settle() -> None:
    log: list[str] = []

    class Refusing(Recording):
        async def before(self, call: Call) -> None:
            raise RuntimeError("refused")

    run = StageRun([Recording("a", log), Refusing("b", log), Recording("c", log)])
    call = _call()
    with pytest.raises(RuntimeError, match="refused"):
        await run.enter(call)
    await run.exit(call)
    assert log == ["a.before", "a.after started", "a.after done"]


@pytest.mark.parametrize("when", ["at once", "after waiting"])
async def test_a_stage_failing_to_settle_is_logged_and_the_others_settle(
    when: str, captured_logs: io.StringIO
) -> None:
    log: list[str] = []
    gate = asyncio.Event()
    gate.set()
    run = StageRun(
        [
            Recording("a", log, gate),
            Recording("b", log, gate, fails=when),
            Recording("c", log),
        ]
    )
    call = _call()
    await run.enter(call)
    await run.exit(call)
    assert "a.after done" in log and "c.after done" in log and "b.after done" not in log
    [failure] = [line for line in log_lines(captured_logs) if "failed to settle" in line["msg"]]
    assert failure["msg"] == "stage b failed to settle"
    assert failure["request_id"] == "req_settle"
    assert failure["level"] == "error" and failure["exc_type"] == "RuntimeError"
    assert "b broke" in failure["exc"]


LIMITS = {
    "rate_limits": {
        "rules": [{"id": "k", "scope": "key", "match": "*", "rpm": 1000, "max_concurrent": 10}]
    },
    "budgets": [
        {"id": "b", "scope": "team", "match": "*", "basis": "cost", "amount": "5", "period": "day"}
    ],
}


async def test_on_redis_a_requests_settles_travel_in_one_round_trip(
    tmp_path: Path,
    mock: MockServer,
    pg_url: str,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = {**LIMITS, "redis_url": redis_url, "server": {"redis_prefix": redis_prefix}}
    gw = await start_gateway(tmp_path, pg_url, mock, config)
    try:
        [limits] = [s for s in gw.services.gateway.stages if isinstance(s, RateLimitStage)]
        redis = limits._limiter._store._redis
        batches: list[list[tuple[Any, ...]]] = []
        real = redis._write

        def spy(conn: Any, batch: list[tuple[tuple[Any, ...], Any]]) -> None:
            # One pipeline each; the deployments' shared health exchange runs on its own.
            mine = [c for c, _ in batch if not any("{health}" in str(arg) for arg in c)]
            if mine:
                batches.append(mine)
            real(conn, batch)

        monkeypatch.setattr(redis, "_write", spy)
        client = AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)
        answer = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=16
        )
        await client.close()
        assert answer.choices[0].message.content

        def touches(batch: list[tuple[Any, ...]], part: str) -> bool:
            return any(part in str(arg) for command in batch for arg in command)

        # Before the call: the rate limits (which take a concurrency slot), then the budget
        # (which holds), one round trip each. After it, the budget's settle and the rate
        # limits' in one batch: only the settle touches both.
        assert touches(batches[0], ":cc:") and not touches(batches[0], ":hold:")
        settles = [b for b in batches if touches(b, ":hold:") and touches(b, ":cc:")]
        assert len(settles) == 1
        # And both settled: no budget hold and no slot is left (Redis drops an emptied set).
        assert await redis.zcard(f"{redis_prefix}holds") == 0
        assert [k async for k in redis.scan_iter(match=f"{redis_prefix}cc:*")] == []
    finally:
        await gw.runner.cleanup()
