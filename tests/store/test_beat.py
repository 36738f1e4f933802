"""The batched writers' flush clock: a fixed beat, each writer at its phase of it, twice as
fast on SQLite while the serving loop has lulls."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faregate import inflight
from faregate.store.db import LIGHT_SHARE, FlushClock, create_engine, default_flush_s, next_beat

INTERVAL = 0.05


def _phase_of(at: float, interval: float = INTERVAL) -> float:
    """Where `at` falls in its interval, as a fraction of one."""
    return (at / interval) % 1.0


def _arrived() -> asyncio.Event:
    """Something to write: set, as a writer's first record after a flush sets it."""
    event = asyncio.Event()
    event.set()
    return event


def _near(phase: float, wanted: float, tolerance: float = 0.2) -> bool:
    gap = abs(phase - wanted) % 1.0
    return min(gap, 1.0 - gap) < tolerance


async def test_each_writer_flushes_on_the_beat_at_its_phase() -> None:
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    for phase in (0.0, 0.5, 0.0, 0.5):
        await next_beat(wake, INTERVAL, phase, arrived=_arrived())
        assert _near(_phase_of(loop.time()), phase)


async def test_a_flush_that_overran_waits_for_the_beat_after_it() -> None:
    """No catching up: the next flush is on the beat, not at once and not a whole interval
    after the late one ended, so the two writers keep half an interval between them."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    await next_beat(wake, INTERVAL, 0.5, arrived=_arrived())
    await asyncio.sleep(INTERVAL * 1.3)  # a flush longer than the interval
    before = loop.time()
    await next_beat(wake, INTERVAL, 0.5, arrived=_arrived())
    assert loop.time() - before < INTERVAL
    assert _near(_phase_of(loop.time()), 0.5)


async def test_a_full_batch_wakes_the_writer_at_once() -> None:
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    wake.set()
    before = loop.time()
    await next_beat(wake, 60.0, arrived=_arrived())
    assert loop.time() - before < 1.0
    assert not wake.is_set()  # cleared for the next batch


async def test_a_writer_with_nothing_to_write_waits_for_something_to_arrive() -> None:
    """An idle server's writers do not wake on every beat: only once a record arrived."""
    wake, arrived = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(next_beat(wake, INTERVAL, arrived=arrived))
    await asyncio.sleep(INTERVAL * 3)
    assert not waiting.done()
    arrived.set()
    await asyncio.wait_for(waiting, INTERVAL * 3)
    assert not arrived.is_set()  # cleared: the next flush waits for the next record


async def test_writers_flush_more_often_on_sqlite_than_on_postgresql(tmp_path: Path) -> None:
    sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'beat.db'}")
    postgres = create_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    try:
        assert default_flush_s(sqlite) == 0.05
        assert default_flush_s(postgres) == 0.2
    finally:
        await sqlite.dispose()
        await postgres.dispose()


async def test_on_sqlite_a_writer_flushes_sooner_while_requests_leave_lulls(
    tmp_path: Path,
) -> None:
    """Light load (a moment with no request in flight since the last flush): the light
    interval. Requests in flight without a break since the last flush: the full one."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'beat.db'}")
    count = inflight.of_loop(asyncio.get_running_loop())
    try:
        clock = FlushClock(engine, INTERVAL)
        assert clock.current() == INTERVAL * LIGHT_SHARE  # idle: nothing in flight
        count.enter()
        assert clock.current() == INTERVAL * LIGHT_SHARE  # the idle moment before it
        count.enter()
        count.leave()
        assert clock.current() == INTERVAL  # one in flight all along: under load
        count.leave()  # a lull
        count.enter()
        assert clock.current() == INTERVAL * LIGHT_SHARE
        assert clock.current() == INTERVAL
        count.leave()
        assert clock.current() == INTERVAL * LIGHT_SHARE
    finally:
        await engine.dispose()


async def test_on_postgresql_the_interval_does_not_change_with_the_load() -> None:
    """PostgreSQL does a flush's work in its own process: the fixed cost of more flushes
    would buy nothing."""
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    try:
        clock = FlushClock(engine, 0.2)
        assert clock.current() == 0.2
        assert clock.current() == 0.2
    finally:
        await engine.dispose()
