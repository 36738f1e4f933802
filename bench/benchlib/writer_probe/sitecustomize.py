"""Times faregate's batched writers inside a server `bench/timeline.py --writers` starts.

Loaded by Python at start-up from `PYTHONPATH` (this folder), and inert unless
`FAREGATE_BENCH_WRITER_PROBE` names a folder. Once `faregate.cli.serve` is imported it wraps:

- each batched writer's task (`UsageWriter._run`, `LedgerWriter._run`): every step it runs on
  the event loop, with where it stopped (the innermost frame it awaits in);
- `store.inserts.on_thread`, wherever it was imported: every call on SQLite's thread, named
  by its caller, in wall and thread CPU time.

At exit it writes `writers-PID.json` there: `[kind, name, start, seconds, cpu]` per item,
`start` on `time.perf_counter()` (CLOCK_MONOTONIC, the clock the client's samples use).
It reaches into private names, so it fails loudly when they change rather than measure
nothing.
"""

from __future__ import annotations

import atexit
import importlib.abc
import json
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

FOLDER = os.environ.get("FAREGATE_BENCH_WRITER_PROBE")
ITEMS: list[tuple[str, str, float, float, float]] = []


def _where(coro: Any) -> str:
    """The innermost frame `coro` is suspended in: 'function:line'."""
    found = "?"
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            found = f"{frame.f_code.co_name}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


def _timed_task(writer: str, coro: Any) -> Any:
    @types.coroutine
    def run() -> Any:
        clock, cpu = time.perf_counter, time.thread_time
        sent: Any = None
        error: BaseException | None = None
        came_from = "start"
        while True:
            start, used = clock(), cpu()
            try:
                step = coro.send(sent) if error is None else coro.throw(error)
            except StopIteration as done:
                ITEMS.append(("loop", f"{writer} {came_from} > end", start, clock() - start, 0.0))
                return done.value
            stopped = _where(coro)
            ITEMS.append(
                ("loop", f"{writer} {came_from} > {stopped}", start, clock() - start, cpu() - used)
            )
            came_from, error = stopped, None
            try:
                sent = yield step
            except BaseException as exc:  # handed on to the task, as `await` would
                error, sent = exc, None

    return run()


def _wrap_writers() -> None:
    from faregate.metering.writer import UsageWriter
    from faregate.wallets.writer import LedgerWriter

    for cls, writer in ((UsageWriter, "usage"), (LedgerWriter, "ledger")):
        original = cls._run

        def _run(self: Any, _original: Any = original, _writer: str = writer) -> Any:
            return _timed_task(_writer, _original(self))

        cls._run = _run  # type: ignore[method-assign]


def _wrap_on_thread() -> None:
    import faregate.metering.rollups
    import faregate.store.db
    import faregate.store.inserts as inserts
    import faregate.wallets.repository  # noqa: F401 - imports on_thread by name

    original = inserts.on_thread

    async def on_thread(conn: Any, work: Any) -> Any:
        caller = sys._getframe(1)
        name = f"{caller.f_code.co_name}:{caller.f_lineno}"

        def timed(db: Any) -> Any:
            start, used = time.perf_counter(), time.thread_time()
            try:
                return work(db)
            finally:
                ITEMS.append(
                    (
                        "thread",
                        name,
                        start,
                        time.perf_counter() - start,
                        time.thread_time() - used,
                    )
                )

        return await original(conn, timed)

    wrapped = 0
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("faregate.") and (
            getattr(module, "on_thread", None) is original
        ):
            module.on_thread = on_thread  # type: ignore[attr-defined]
            wrapped += 1
    if not wrapped:
        raise RuntimeError("writer probe: store.inserts.on_thread not found")


class _OnServe(importlib.abc.MetaPathFinder):
    """Wraps once `faregate.cli.serve` is first imported (the server, not the mock)."""

    done = False

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "faregate.cli.serve" and not _OnServe.done:
            _OnServe.done = True
            _wrap_writers()
            _wrap_on_thread()
            atexit.register(_dump)
        return None


_lock = threading.Lock()


def _dump() -> None:
    assert FOLDER is not None
    with _lock:
        items = list(ITEMS)
    Path(FOLDER, f"writers-{os.getpid()}.json").write_text(json.dumps(items))


if FOLDER:
    sys.meta_path.insert(0, _OnServe())
