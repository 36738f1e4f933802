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

    python bench/pipeline.py                    # 3 x 10,000 requests
    python bench/pipeline.py --distributed
    python bench/pipeline.py --requests 20000 --profile /tmp/pipeline.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
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
        from faregate.providers.base import ChatResult
        from faregate.usage import Usage

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


async def start_gateway(key: str) -> tuple[Any, Any, Any]:
    """The real app on the prepared instance, every upstream swapped for InstantProvider:
    (runner to clean up, gateway, the key's principal)."""
    from aiohttp import web

    from faregate.api.state import SERVICES
    from faregate.app import build_app, tune_gc
    from faregate.config import load_settings

    app = build_app(load_settings(CONFIG))
    runner = web.AppRunner(app)
    await runner.setup()
    tune_gc()
    services = app[SERVICES]
    gateway = services.gateway
    for name in list(gateway.upstreams):
        gateway.upstreams[name] = InstantProvider()
    principal = await services.keys.authenticate(key)
    return runner, gateway, principal


def new_call(principal: Any) -> Any:
    """One chat call as the HTTP front would hand it to the gateway."""
    from faregate.api.common import new_request_id
    from faregate.gateway.call import Call

    return Call(
        request_id=new_request_id(),
        principal=principal,
        kind="chat",
        model="bench-fast",
        body=dict(BODY),
        tags=principal.tags,
    )


async def measure(key: str, requests: int, repeats: int) -> list[float]:
    runner, gateway, principal = await start_gateway(key)

    async def caller(n: int) -> None:
        for _ in range(n):
            await gateway.chat(new_call(principal))

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
    args = parser.parse_args()
    instance, key = prepare(args.distributed)
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
