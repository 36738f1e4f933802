"""The Redis client the gateway shares: script calls (EVALSHA) issued in the same turn of
the event loop go to Redis as one pipeline, in order, on one connection.

Every policy stage makes one or two script calls per request (limits, budgets, wallet
holds); under concurrent load redis-py's per-command cost (pool checkout, timeouts,
packing, parsing) dominated the gateway's CPU. Batching keeps each call atomic on the
server (a script is atomic whatever else is in the pipeline) and only changes how the
calls travel. Nothing here knows what the scripts do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis

_Pending = tuple[tuple[Any, ...], asyncio.Future[Any]]


class PipelinedRedis(aioredis.Redis):
    """`redis.asyncio.Redis` whose `evalsha` is batched per event-loop turn.

    `AsyncScript.__call__` (register_script) calls `evalsha`, so registered scripts are
    batched with no change to their callers, and its NOSCRIPT fallback still works: each
    reply, error or value, goes to its own caller. A failure of the whole round trip
    (connection lost) reaches every caller of that batch."""

    # The most calls sent in one pipeline; a larger turn is split.
    max_batch = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: list[_Pending] = []
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((("EVALSHA", sha, numkeys, *keys_and_args), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), self.max_batch):
            task = asyncio.ensure_future(self._send(queue[start : start + self.max_batch]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        live = [(command, future) for command, future in batch if not future.done()]
        if not live:
            return
        try:
            pipe = self.pipeline(transaction=False)
            for command, _ in live:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # shutting down: the callers are cancelled too
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:  # the round trip failed: every caller learns it
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(live, replies, strict=True):
            if future.done():  # the caller gave up (cancelled) meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        await super().aclose(close_connection_pool)
