"""The Redis client the gateway shares: script calls (EVALSHA) and GETs issued in the same
turn of the event loop go to Redis as one pipeline, in order, on one connection.

Every policy stage makes one or two script calls per request (limits, budgets, wallet
holds); under concurrent load redis-py's per-command cost (pool checkout, timeouts,
packing, parsing) dominated the gateway's CPU. Batching keeps each call atomic on the
server (a script is atomic whatever else is in the pipeline) and only changes how the
calls travel. The batches travel on a connection of their own: commands packed here as
RESP, replies parsed by hiredis, errors made into redis-py's exceptions by redis-py's own
table, so callers (AsyncScript's NOSCRIPT fallback included) see what redis-py would
give them. redis-py's pipeline cost ~40 µs of CPU per call; this ~5. GET (a response
cache's lookup) travels the same way; other commands, and deployments over TLS or a Unix
socket, use redis-py as before. Nothing here knows what the scripts do.

Once the connection is open, a turn's calls are packed (by hiredis) and written in the
callback that ends the turn, and each reply resolves its caller's own future as it is
parsed: no task, no gather and no second future per call stand between a caller and its
reply.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, NoScriptError

_Pending = tuple[tuple[Any, ...], asyncio.Future[Any]]


def _arg(value: Any) -> bytes:
    """One command argument as redis-py encodes it (str as UTF-8, numbers as text)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise DataError("a bool is not a valid Redis argument")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    raise DataError(f"invalid Redis argument of type {type(value).__name__}")


def pack_one(command: tuple[Any, ...]) -> bytes:
    """One command as a RESP array of bulk strings, as redis-py encodes its arguments; a
    value redis-py refuses (a bool, None, a list) raises its DataError."""
    try:
        return hiredis.pack_command(command)  # type: ignore[no-any-return]
    except TypeError:  # hiredis names no argument: say which one, in redis-py's terms
        for value in command:
            _arg(value)
        raise


def pack(commands: Sequence[tuple[Any, ...]]) -> bytes:
    """Commands as RESP arrays of bulk strings, back to back."""
    return b"".join([pack_one(command) for command in commands])


class _RespConnection(asyncio.Protocol):
    """One connection; replies resolve the waiting futures in the order sent."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()  # the loop its replies resolve futures on
        self.closed = False
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=BaseParser.parse_error
        )
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._drained: asyncio.Future[None] | None = None  # see `drained`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except InvalidResponse as exc:
                self._lose(exc)
                return
            if reply is False:  # needs more bytes
                return
            future = self._waiting.popleft()
            if not self._waiting:
                self._wake_drained()
            if future.done():  # its caller gave up (cancelled) meanwhile
                continue
            if isinstance(reply, Exception):  # an error reply, made redis-py's exception
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _lose(self, error: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self._wake_drained()

    def _wake_drained(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drained(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until every call sent has its reply."""
        if self._waiting:
            self._drained = self.loop.create_future()
            await asyncio.wait({self._drained}, timeout=timeout)

    def send(self, data: bytes, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Write `data`, one command per future: each reply resolves its future, in order
        (an error reply as its exception)."""
        assert self.transport is not None
        self._waiting.extend(futures)
        self.transport.write(data)

    def call(self, commands: Sequence[tuple[Any, ...]]) -> list[asyncio.Future[Any]]:
        """Send `commands` as one pipeline; a future per command for its reply."""
        futures = [self.loop.create_future() for _ in commands]
        self.send(pack(commands), futures)
        return futures

    def close(self) -> None:
        self._lose(RedisConnectionError("Redis connection closed"))


class Script:
    """`AsyncScript`'s call as `register_script` returns it here: EVALSHA, and on NOSCRIPT the
    script loaded and called again. redis-py's version also imports its Pipeline class and
    checks the client against it on every call, a visible share of a script call's CPU."""

    __slots__ = ("registered_client", "script", "sha")

    def __init__(self, client: aioredis.Redis, script: str | bytes) -> None:
        self.registered_client = client
        self.script = script
        text = script.encode() if isinstance(script, str) else script
        self.sha = hashlib.sha1(text).hexdigest()

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Sequence[Any] | None = None,
        client: aioredis.Redis | None = None,
    ) -> Any:
        client = client or self.registered_client
        keys = keys or ()
        values = (*keys, *(args or ()))
        try:
            return await client.evalsha(self.sha, len(keys), *values)
        except NoScriptError:  # a Redis that restarted, or was flushed, since the last call
            self.sha = await client.script_load(self.script)
            return await client.evalsha(self.sha, len(keys), *values)


class PipelinedRedis(aioredis.Redis):
    """`redis.asyncio.Redis` whose `evalsha` and `get` are batched per event-loop turn.

    Registered scripts (`Script`, with AsyncScript's call signature) call `evalsha`, so they
    are batched with no change to their callers, and the NOSCRIPT fallback still works: each
    reply, error or value, goes to its own caller. A failure of the whole round trip
    (connection lost) reaches every caller of that batch."""

    # The most calls sent in one pipeline; a larger turn is split.
    max_batch = 256

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: list[_Pending] = []
        self._flush_scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self._conn: _RespConnection | None = None
        self._connecting: asyncio.Future[_RespConnection] | None = None
        self._lean = self.connection_pool.connection_class is Connection

    def register_script(self, script: str | bytes) -> Script:  # type: ignore[override]
        return Script(self, script)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any]:  # type: ignore[override]
        return self._queued(("EVALSHA", sha, numkeys, *keys_and_args))

    def get(self, name: Any) -> Awaitable[Any]:  # type: ignore[override]
        """GET, batched as the script calls are: a response cache hit is one, and through
        redis-py it cost a hit on PostgreSQL + Redis most of what a request answered by the
        upstream costs (bench/HISTORY.md, "A cache cell")."""
        return self._queued(("GET", name))

    def _queued(self, command: tuple[Any, ...]) -> Awaitable[Any]:
        # The open connection's loop is the caller's (a transport serves one loop), and
        # asking asyncio for the running loop costs a getpid() system call on Python 3.11.
        conn = self._conn
        loop = conn.loop if conn is not None and not conn.closed else asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """End of the turn: the queued calls go out, written at once on an open connection,
        else by a task that opens it first (or, off the lean path, through redis-py)."""
        self._flush_scheduled = False
        queue, self._queue = self._queue, []
        conn = self._conn
        for start in range(0, len(queue), self.max_batch):
            batch = queue[start : start + self.max_batch]
            if self._lean and conn is not None and not conn.closed:
                self._write(conn, batch)
                continue
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _write(self, conn: _RespConnection, batch: list[_Pending]) -> None:
        """Pack the calls still awaited and write them as one pipeline; the replies resolve
        the callers' futures directly. A call whose arguments cannot be packed fails alone."""
        data: list[bytes] = []
        futures: list[asyncio.Future[Any]] = []
        for command, future in batch:
            if future.done():  # cancelled before it was sent
                continue
            try:
                data.append(pack_one(command))
            except DataError as exc:
                future.set_exception(exc)
                continue
            futures.append(future)
        if futures:
            conn.send(b"".join(data), futures)

    async def _connection(self) -> _RespConnection:
        """The batches' own connection, opened (and authenticated) on first use and again
        after it was lost; concurrent senders share one attempt."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _RespConnection:
        options = self.connection_pool.connection_kwargs
        loop = asyncio.get_running_loop()
        timeout = options.get("socket_connect_timeout") or options.get("socket_timeout")
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _RespConnection, options.get("host", "localhost"), options.get("port", 6379)
                )
                setup: list[tuple[Any, ...]] = []
                if options.get("password") is not None:
                    user = options.get("username")
                    password = options["password"]
                    setup.append(("AUTH", user, password) if user else ("AUTH", password))
                if options.get("db"):
                    setup.append(("SELECT", options["db"]))
                if setup:
                    try:
                        await asyncio.gather(*conn.call(setup))
                    except BaseException:
                        conn.close()
                        raise
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        self._conn = conn
        return conn

    async def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands sent as one pipeline, off the batching: their replies, an error reply as
        its exception (as redis-py's `execute(raise_on_error=False)` gives it)."""
        if not self._lean:
            pipe = self.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]
        conn = await self._connection()
        return await asyncio.gather(*conn.call(commands), return_exceptions=True)

    async def _send(self, batch: list[_Pending]) -> None:
        """A batch that found no open connection (or is off the lean path)."""
        live = [(command, future) for command, future in batch if not future.done()]
        if not live:
            return
        try:
            if self._lean:
                self._write(await self._connection(), live)
                return
            replies = await self._round_trip([command for command, _ in live])
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
        """Close once the calls already made have their replies (at most 10 s more)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._conn is not None:
            await self._conn.drained(timeout=10)
            self._conn.close()
            self._conn = None
        await super().aclose(close_connection_pool)
