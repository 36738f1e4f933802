"""PeriodicTask: runs a job on an interval, survives a failing run, stops on a flag."""

from __future__ import annotations

import asyncio

import pytest

from faregate.background import PeriodicTask


async def _until(predicate: object, limit: int = 500) -> None:
    for _ in range(limit):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_a_periodic_task_runs_until_stopped() -> None:
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    task = PeriodicTask("t", 0.01, job).start()
    await _until(lambda: len(ran) >= 3)
    await task.stop()
    after = len(ran)
    await asyncio.sleep(0.05)
    assert len(ran) == after and not task.running


async def test_a_failing_run_is_logged_and_the_loop_goes_on() -> None:
    calls: list[int] = []

    async def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")

    task = PeriodicTask("t", 0.01, job, run_first=True).start()
    await _until(lambda: len(calls) >= 2)
    await task.stop()
    assert task.failures == 1 and task.runs >= 2


async def test_stop_lets_a_running_job_finish() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.sleep(0.05)
        finished.set()

    task = PeriodicTask("t", 0.01, job, run_first=True).start()
    await started.wait()
    await task.stop()
    assert finished.is_set()


async def test_stop_is_safe_before_start_and_twice() -> None:
    async def job() -> None:
        return None

    task = PeriodicTask("t", 1, job)
    await task.stop()
    await task.stop()
    with pytest.raises(ValueError):
        PeriodicTask("t", 0, job)


async def test_stop_with_a_timeout_does_not_wait_out_a_stuck_job() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        started.set()
        await release.wait()

    task = PeriodicTask("t", 0.01, job, run_first=True).start()
    await started.wait()
    await asyncio.wait_for(task.stop(timeout=0.05), 1)
    assert task.running  # the job goes on; only the wait was bounded
    release.set()
    await task.stop()
    assert not task.running and task.runs == 1
