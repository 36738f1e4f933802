"""The HTTP/1.1 client for the JSON and SSE calls to upstream providers: keep-alive
connections pooled per origin (at most `max_connections` open); each exchange on one of them
is `http1` (asyncio protocols, responses parsed by llhttp).

aiohttp's client spent about 140 µs of CPU per call on the benchmark machine, more than
half of what a whole bare pass-through costs; this one about 40 (bench/HISTORY.md). It does
only what the adapters need: POST a body, read the answer whole or as it arrives, with a
connect timeout, a total timeout and a timeout between reads. It raises OSError (the
upstream could not be reached or dropped the connection before answering), `PayloadError`
(the answer was cut), `ProtocolError` (not HTTP) or TimeoutError; `http.map_exceptions`
turns those into ProviderErrors. Multipart uploads still go through aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from faregate.providers.http1 import Connection, Response, Timeouts, wait_event

_KEEPALIVE = 30.0  # seconds an idle connection stays in the pool
_MAX_IDLE = 256  # idle connections kept per origin
# Connections open at once to one origin, idle ones included, unless configured otherwise
# (a provider's `max_connections`): the OpenAI SDK's own default. A call that finds them
# all busy waits for one, up to its connect timeout.
MAX_CONNECTIONS = 1000

Origin = tuple[str, str, int]  # scheme, host, port
_NO_LIMITS = Timeouts()


@dataclass(frozen=True, slots=True)
class _Target:
    origin: Origin  # the pool's key
    request_line: bytes  # b"POST /path HTTP/1.1\r\nHost: ...\r\n"


def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.netloc.rpartition("@")[2]  # no userinfo in Host
    line = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
    return _Target((parts.scheme, parts.hostname, port), line)


class HttpTransport:
    """Keep-alive connection pools per origin (scheme, host, port), shared by every
    upstream of the app. Connections are opened on demand, up to a cap per origin
    (`max_connections`, or `limit` for one origin); an idle one is reused last-in first-out
    and closed after 30 s.

    At the cap a call waits, first come first served, for a connection another call
    returns (handed over directly) or for the place of one that closed; the wait counts
    against its connect timeout, so an upstream that holds every connection fails the
    calls that queue behind it the way one that does not answer a connect would (and the
    router fails over), instead of the gateway opening sockets without end."""

    def __init__(
        self, ssl_context: ssl.SSLContext | None = None, *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._ssl = ssl_context
        self._max = max_connections
        self._limits: dict[Origin, int] = {}
        self._idle: dict[Origin, deque[Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._open: set[Connection] = set()
        # Per origin: connections open or being opened, and the calls waiting for one.
        self._count: dict[Origin, int] = {}
        self._waiters: dict[Origin, deque[asyncio.Future[Connection | None]]] = {}
        self._closed = False
        # The loop its connections belong to, from the first call on: on Python 3.11
        # asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def limit(self, url: str, max_connections: int) -> None:
        """Cap the connections to `url`'s origin (the lowest cap given for it applies)."""
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        origin = _target(url).origin
        self._limits[origin] = min(max_connections, self._limits.get(origin, max_connections))

    def pools(self) -> Iterator[tuple[str, int, int]]:
        """Per origin ("scheme://host:port"): connections open or being opened, and calls
        waiting for one (read by the metrics when scraped)."""
        for (scheme, host, port), count in self._count.items():
            waiting = sum(1 for w in self._waiters.get((scheme, host, port), ()) if not w.done())
            yield f"{scheme}://{host}:{port}", count, waiting

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 4096:  # URLs come from configuration; bound it anyway
                self._targets.clear()
            target = self._targets[url] = _target(url)
        return target

    async def post(
        self, url: str, body: bytes, headers: bytes, timeouts: Timeouts = _NO_LIMITS
    ) -> Response:
        """Send a POST and wait for the answer's headers. `headers` is a `header_block`.
        A pooled connection the upstream closed before answering is replaced once, by a new
        connection."""
        if self._closed:
            raise ConnectionError("the HTTP transport is closed")
        target = self._target(url)
        loop = self._loop or self._bind_loop()
        deadline = loop.time() + timeouts.total if timeouts.total is not None else None
        data = b"".join(
            (target.request_line, headers, b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        origin = target.origin
        for attempt in range(2):
            conn, reused = self._checkout(origin) if attempt == 0 else (None, False)
            if conn is None:
                conn, reused = await self._acquire(loop, origin, timeouts.connect)
            try:
                conn.send(data)
                while not conn.headers_done:
                    await wait_event(conn, deadline, timeouts.read)
                return Response(conn, self, origin, deadline, timeouts.read)
            except ConnectionResetError:
                self._discard(origin, conn)
                if reused and not conn.received:
                    # A stale keep-alive connection: the request never got there. Its idle
                    # siblings likely went the same way (an upstream restart): drop them
                    # and try once more on a new connection.
                    self._drop_idle(origin)
                    continue
                raise
            except BaseException:  # cancelled, timed out, or an answer it cannot decode
                self._discard(origin, conn)
                raise
        raise ConnectionResetError("the upstream closed the connection")

    def _checkout(self, origin: Origin) -> tuple[Connection | None, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > _KEEPALIVE:
                self._discard(origin, conn)
                continue
            return conn, True
        return None, False

    def _drop_idle(self, origin: Origin) -> None:
        for conn in self._idle.pop(origin, ()):
            self._discard(origin, conn)

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, origin: Origin, timeout: float | None
    ) -> tuple[Connection, bool]:
        """A new connection if the origin is below its cap, else the first one returned or
        the place of the first one closed (whichever comes), within `timeout`. Returns the
        connection and whether it was used before."""
        async with asyncio.timeout(timeout):
            count = self._count.get(origin, 0)
            if count < self._limits.get(origin, self._max):
                self._count[origin] = count + 1
            else:
                handed = await self._wait_turn(loop, origin)
                if handed is not None:
                    return handed, True
            # This call holds a place: a failed connect gives it on.
            try:
                return await self._connect(loop, origin), False
            except BaseException:
                self._free(origin)
                raise

    async def _wait_turn(
        self, loop: asyncio.AbstractEventLoop, origin: Origin
    ) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        queue = self._waiters.setdefault(origin, deque())
        queue.append(waiter)
        try:
            return await waiter
        except BaseException:
            if not waiter.done():
                queue.remove(waiter)
            elif not waiter.cancelled():  # its turn came as it was cancelled: pass it on
                handed = waiter.result()
                if handed is None:
                    self._free(origin)
                else:
                    self.checkin(origin, handed)
            raise

    def _next_waiter(self, origin: Origin) -> asyncio.Future[Connection | None] | None:
        queue = self._waiters.get(origin)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                return waiter
        return None

    def _free(self, origin: Origin) -> None:
        """A place at `origin` is free: it goes to the first waiting call, if any."""
        if self._closed:
            return
        waiter = self._next_waiter(origin)
        if waiter is not None:
            waiter.set_result(None)  # the place passes on: the count stays
        else:
            self._count[origin] -= 1

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        _, conn = await loop.create_connection(
            lambda: Connection(loop),
            host,
            port,
            ssl=context,
            server_hostname=host if context is not None else None,
        )
        if self._closed:
            conn.close()
            raise ConnectionError("the HTTP transport is closed")
        self._open.add(conn)
        return conn

    def _discard(self, origin: Origin, conn: Connection) -> None:
        """Close `conn` and give its place on (once, however often it is discarded)."""
        conn.close()
        if conn in self._open:
            self._open.remove(conn)
            self._free(origin)

    def checkin(self, origin: Origin, conn: Connection) -> None:
        if self._closed or not conn.reusable():
            self._discard(origin, conn)
            return
        conn.busy = False
        waiter = self._next_waiter(origin)
        if waiter is not None:  # straight to the first call waiting for this origin
            waiter.set_result(conn)
            return
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= _MAX_IDLE:
            self._discard(origin, conn)
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def close(self) -> None:
        """Close every connection, idle or in use; later posts fail, and so do the calls
        waiting for a connection."""
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        for queue in self._waiters.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_exception(ConnectionError("the HTTP transport is closed"))
        self._waiters.clear()
        self._count.clear()
        await asyncio.sleep(0)  # let the transports finish closing
