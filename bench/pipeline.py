"""faregate's own CPU per request, without HTTP: the whole pipeline in one process.

Builds the real app from configs/faregate-embedded.yaml on a fresh SQLite database (a
customer with a prepaid wallet and a key, as `run.py` does), swaps every upstream for an
in-process provider that answers at once, and drives `Gateway.chat` from 32 concurrent
callers. The figure is the process's CPU time (every thread, the batched writers included)
per request: what the gateway adds on top of an HTTP server and client, repeatable to a few
percent, in seconds instead of a full `run.py`. `--profile OUT` runs it under cProfile.
`--distributed` runs it on a PostgreSQL database made for the run (dropped after it) and the
Redis at 127.0.0.1:6379, as run.py's "PostgreSQL + Redis" target; their own CPU is not
counted.

`--instructions` counts instructions instead of seconds, for comparing two versions of the
code on a machine whose CPU time drifts from run to run (this one's did by 2x within
minutes). It runs the pipeline twice under valgrind's callgrind (every thread), once with
`--small` and once with `--requests` requests, each with the batched writers' timers held
off so that both runs' records are written in one flush at shutdown, and reports the
difference per request: start-up, warm-up and the flush's fixed cost cancel out. The count
repeats within 1-4% (the background loops still wake by the clock, and a run under valgrind
lasts longer on a busy machine), and it is instructions, not time: it does not see what a
request costs in cache misses, and the writers' batches are the whole run (at full load they
are ~0.2 s of requests). Each run takes a minute or two. `--by-object` adds the same
difference split by the shared object the instructions ran in (CPython, SQLite, libc, orjson,
_decimal...), from each run's callgrind dump.

    python bench/pipeline.py                    # 3 x 10,000 requests
    python bench/pipeline.py --distributed
    python bench/pipeline.py --requests 20000 --profile /tmp/pipeline.prof
    python bench/pipeline.py --instructions     # 1,600 - 320 requests, under callgrind
    python bench/pipeline.py --instructions --by-object
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.faregate_setup import CONFIG, FaregateInstance

BENCH = Path(__file__).resolve().parent
CALLERS = 32
BODY = {
    "model": "bench-fast",
    "messages": [{"role": "user", "content": "Write one short sentence about benchmarks."}],
    "max_tokens": 64,
}


class InstantProvider:
    """Answers every chat at once with a 20-token completion, as the mock's `fast` does."""

    async def chat(self, body: dict[str, Any], model: str) -> Any:
        await asyncio.sleep(0)  # one turn of the loop, as a real upstream's I/O would take
        ChatResult, Usage = _faregate()[:2]
        answer = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "word " * 20},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
        }
        return ChatResult(body=answer, usage=Usage(input_tokens=12, output_tokens=20))


async def start_gateway(key: str, *, hold_writers: bool = False) -> tuple[Any, Any, Any]:
    """The real app on the prepared instance, every upstream swapped for InstantProvider:
    (runner to clean up, gateway, the key's principal). `hold_writers`: the batched writers
    flush only when the app shuts down."""
    from aiohttp import web

    from faregate.api.state import SERVICES
    from faregate.app import build_app, tune_gc
    from faregate.config import load_settings

    settings = load_settings(CONFIG)
    if hold_writers:
        settings.raw.setdefault("metering", {})["flush_interval"] = 1e6
        settings.raw.setdefault("wallets", {})["journal_flush_s"] = 1e6
    app = build_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    tune_gc()
    services = app[SERVICES]
    gateway = services.gateway
    for name in list(gateway.upstreams):
        gateway.upstreams[name] = InstantProvider()
    principal = await services.keys.authenticate(key)
    return runner, gateway, principal


@functools.cache
def _faregate() -> tuple[Any, ...]:
    """What the harness makes per request, imported once (after `prepare` set the
    environment): an import statement per request cost ~13,000 instructions."""
    from faregate.api.common import new_request_id
    from faregate.gateway.call import Call
    from faregate.providers.base import ChatResult
    from faregate.usage import Usage

    return ChatResult, Usage, new_request_id, Call


def new_call(principal: Any) -> Any:
    """One chat call as the HTTP front would hand it to the gateway."""
    new_request_id, Call = _faregate()[2:]
    return Call(
        request_id=new_request_id(),
        principal=principal,
        kind="chat",
        model="bench-fast",
        body=dict(BODY),
        tags=principal.tags,
    )


async def measure(key: str, requests: int, repeats: int) -> list[float]:
    from faregate import inflight

    runner, gateway, principal = await start_gateway(key)
    # Counted in flight as the HTTP front counts its requests: with CALLERS at once there is
    # no lull, so the writers flush at their interval under load (store.db.FlushClock).
    in_flight = inflight.of_loop(asyncio.get_running_loop())

    async def caller(n: int) -> None:
        for _ in range(n):
            in_flight.enter()
            try:
                await gateway.chat(new_call(principal))
            finally:
                in_flight.leave()

    await asyncio.gather(*(caller(100) for _ in range(CALLERS)))  # warm-up
    figures = []
    per_caller = requests // CALLERS
    for _ in range(repeats):
        await asyncio.sleep(0.5)  # the warm-up's (or last run's) writes land first
        started = time.process_time()
        await asyncio.gather(*(caller(per_caller) for _ in range(CALLERS)))
        await asyncio.sleep(0.3)  # and this run's batched writes are counted
        figures.append((time.process_time() - started) / (per_caller * CALLERS) * 1e6)
    await runner.cleanup()
    return figures


async def run_only(key: str, requests: int) -> None:
    """The counted child of --instructions: start and warm up uninstrumented, say "ready"
    and wait for the parent to switch callgrind's instrumentation on, then `requests` chat
    calls and the shutdown (which flushes the writers)."""
    runner, gateway, principal = await start_gateway(key, hold_writers=True)

    async def caller(n: int) -> None:
        for _ in range(n):
            await gateway.chat(new_call(principal))

    await asyncio.gather(*(caller(10) for _ in range(CALLERS)))  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()
    await asyncio.gather(*(caller(requests // CALLERS) for _ in range(CALLERS)))
    await runner.cleanup()


COLLECTED = re.compile(r"Collected : (\d+)")


def count_instructions(requests: int, dump: Path | None = None) -> int:
    """Instructions (every thread) of one `run_only` child's counted part under callgrind;
    with `dump`, callgrind's per-function counts are written there."""
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    child = subprocess.Popen(
        [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={dump or '/dev/null'}",
            sys.executable,
            __file__,
            "--count-child",
            str(requests),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    assert child.stdin and child.stdout
    if child.stdout.readline().strip() != "ready":
        child.kill()
        sys.exit(f"the callgrind run failed:\n{child.communicate()[1][-3000:]}")
    subprocess.run([control, "-i", "on", str(child.pid)], check=True, capture_output=True)
    _, stderr = child.communicate("go\n")
    found = COLLECTED.findall(stderr)
    if child.returncode or not found:
        sys.exit(f"the callgrind run failed:\n{stderr[-3000:]}")
    return int(found[-1])


def by_object(dump: Path) -> dict[str, int]:
    """A callgrind dump's instructions summed by the shared object they ran in (its file
    name), read from the dump itself. `ob=` sets the object of the cost lines after it; an
    object is named once, as "(id) name" on the first `ob=` or `cob=` line that refers to it,
    and as "(id)" after. The cost line after a `calls=` line is the callee's inclusive cost,
    not self cost, so it is skipped."""
    names: dict[str, str] = {}
    totals: dict[str, int] = {}
    current = "?"
    after_call = False
    with dump.open() as lines:
        for line in lines:
            head = line[:1]
            if head.isdigit() or head in "+-*":  # a cost line: position, then instructions
                if after_call:
                    after_call = False
                    continue
                fields = line.split()
                if len(fields) > 1:
                    totals[current] = totals.get(current, 0) + int(fields[1])
            elif line.startswith(("ob=", "cob=")):  # a callee's object may be named first
                callee = line.startswith("c")
                ref, _, name = line[4 if callee else 3 :].strip().partition(" ")
                if name:
                    names[ref] = Path(name).name
                if not callee:
                    current = ref
            elif line.startswith("calls="):
                after_call = True
    return {names.get(ref, ref): count for ref, count in totals.items()}


def instructions(small: int, large: int, split: bool = False) -> tuple[float, dict[str, float]]:
    """Instructions per request: the difference of a `large` and a `small` run; with `split`,
    also that difference for each shared object (else an empty dict)."""
    with tempfile.TemporaryDirectory(prefix="faregate-callgrind-") as folder:
        dumps = {n: Path(folder) / f"callgrind.{n}" if split else None for n in (small, large)}
        counts = {n: count_instructions(n, dumps[n]) for n in (small, large)}
        parts = {n: by_object(dump) if dump else {} for n, dump in dumps.items()}
    per_object = {
        name: (parts[large].get(name, 0) - parts[small].get(name, 0)) / (large - small)
        for name in parts[small].keys() | parts[large].keys()
    }
    return (counts[large] - counts[small]) / (large - small), per_object


def prepare(distributed: bool = False) -> tuple[FaregateInstance, str]:
    """A fresh instance (database, customer, wallet, key) for an in-process gateway, and its
    key; `instance.close()` drops the PostgreSQL database and the Redis keys made for it."""
    instance = FaregateInstance(
        "pipeline", BENCH / "work", "http://127.0.0.1:9", distributed=distributed
    )
    instance.prepare()
    os.environ.update(instance.env)
    assert instance.key
    from faregate.logs import setup_logging

    setup_logging("warning")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return instance, instance.key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per run (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", metavar="OUT", help="write cProfile stats to OUT")
    parser.add_argument(
        "--distributed", action="store_true", help="on PostgreSQL and Redis, not SQLite"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per request under callgrind (--requests default 1,600)",
    )
    parser.add_argument("--small", type=int, default=320, help="the --instructions baseline run")
    parser.add_argument(
        "--by-object",
        action="store_true",
        help="with --instructions: split them by shared object (CPython, SQLite, libc...)",
    )
    parser.add_argument("--count-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.by_object and not args.instructions:
        parser.error("--by-object splits the count of --instructions: give both")
    if args.instructions:
        large = args.requests if "--requests" in sys.argv else 1_600
        per_request, per_object = instructions(args.small, large, split=args.by_object)
        print(
            f"pipeline: {per_request:,.0f} instructions per chat request"
            + (", of which" if per_object else "")
        )
        for name, count in sorted(per_object.items(), key=lambda item: -item[1]):
            if abs(count) >= 500:  # the rest is noise of a few calls either way
                print(f"  {count:>10,.0f}  {name}")
        return
    instance, key = prepare(args.distributed)
    if args.count_child is not None:
        try:
            asyncio.run(run_only(key, args.count_child))
        finally:
            instance.close()
        return
    work = measure(key, args.requests, args.repeats)
    try:
        if args.profile:
            profiler = cProfile.Profile()
            figures = profiler.runcall(asyncio.run, work)
            profiler.dump_stats(args.profile)
        else:
            figures = asyncio.run(work)
    finally:
        instance.close()
    for figure in figures:
        print(f"pipeline: {figure:.1f} µs CPU per chat request")


if __name__ == "__main__":
    main()
