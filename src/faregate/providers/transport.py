"""The HTTP/1.1 client for the JSON and SSE calls to upstream providers: keep-alive
connections pooled per origin (at most `max_connections` open), asyncio protocols,
responses parsed by llhttp (httptools).

aiohttp's client spent about 140 µs of CPU per call on the benchmark machine, more than
half of what a whole bare pass-through costs; this one about 40 (bench/README.md). It does
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
import zlib
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

# A stream's unread body above this pauses reading from the socket until it is consumed.
_HIGH_WATER = 256 * 1024
_KEEPALIVE = 30.0  # seconds an idle connection stays in the pool
_MAX_IDLE = 256  # idle connections kept per origin
# Connections open at once to one origin, idle ones included, unless configured otherwise
# (a provider's `max_connections`): the OpenAI SDK's own default. A call that finds them
# all busy waits for one, up to its connect timeout.
MAX_CONNECTIONS = 1000

Origin = tuple[str, str, int]  # scheme, host, port


class TransportError(Exception):
    """A failure of the HTTP exchange itself (never an upstream HTTP status)."""


class PayloadError(TransportError):
    """The connection ended before the answer's body was complete."""


class ProtocolError(TransportError):
    """What came back is not a valid HTTP/1.1 answer."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    total: float | None = None  # the whole exchange, body included
    connect: float | None = None  # opening a connection (TCP and TLS)
    read: float | None = None  # the longest wait for the next bytes of the answer


class Headers(dict[str, str]):
    """Response headers under lower-case names; `get` takes a name in any case."""

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


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


def header_block(headers: Mapping[str, str]) -> bytes:
    """Request headers as wire bytes, made once per upstream. Refuses CR or LF in a name
    or value: a configured header must not be able to inject another."""
    lines = []
    for name, value in headers.items():
        text = f"{name}: {value}"
        if "\r" in text or "\n" in text:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(text + "\r\n")
    return "".join(lines).encode("latin-1")


def _decoder(encoding: str | None) -> Any:
    if not encoding or encoding == "identity":
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ProtocolError(f"unsupported content encoding {encoding!r}")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # an exchange is under way
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers = Headers()
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False  # any byte of the answer
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for (a 408 before closing): never reuse
            self.close()
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headers_done:
                self.error = PayloadError("the upstream closed the connection mid-answer")
            else:
                self.error = ConnectionResetError("the upstream closed the connection")
        self._wake()

    # -- llhttp callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = dict.get(self.headers, key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- the exchange ---------------------------------------------------------------------

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def timed_out(self) -> None:
        self._fail(TimeoutError("the upstream did not answer in time"))

    async def wait(self) -> None:
        """Until something happens: headers, body bytes, the end, an error or a timeout."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def send(self, data: bytes) -> None:
        self._reset()
        self.busy = True
        assert self.transport is not None
        self.transport.write(data)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Response:
    """An answer whose headers have arrived. Read it with `read()` or `iter_any()`, then
    `release()` it (always: it returns the connection to the pool or closes it)."""

    __slots__ = ("_conn", "_deadline", "_decoder", "_origin", "_pool", "_read", "headers", "status")

    def __init__(
        self,
        conn: _Connection,
        pool: HttpTransport,
        origin: Origin,
        deadline: float | None,
        read_timeout: float | None,
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._origin = origin
        self._deadline = deadline
        self._read = read_timeout
        self.status = conn.status
        self.headers = conn.headers
        self._decoder = _decoder(conn.headers.get("content-encoding"))

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first bytes once `limit` of them have arrived."""
        conn = self._conn
        while not conn.complete and (limit is None or conn.buffered < limit):
            await _wait(conn, self._deadline, self._read)
        data = self._decode(conn.take(), final=conn.complete)
        return data if limit is None else data[:limit]

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives, one block per socket read (or fewer)."""
        conn = self._conn
        while True:
            if conn.body:
                data = self._decode(conn.take(), final=conn.complete)
                if data:
                    yield data
                continue
            if conn.complete:
                return
            await _wait(conn, self._deadline, self._read)

    def _decode(self, data: bytes, *, final: bool) -> bytes:
        if self._decoder is None:
            return data
        try:
            out: bytes = self._decoder.decompress(data)
            if final:
                out += self._decoder.flush()
        except zlib.error:
            raise ProtocolError("the upstream sent a body that does not decompress") from None
        return out

    def release(self) -> None:
        self._pool.checkin(self._origin, self._conn)


async def _wait(conn: _Connection, deadline: float | None, read_timeout: float | None) -> None:
    """Wait for the connection's next event within the total deadline and the read timeout
    (one timer per wait: arm it only when a limit applies)."""
    if conn.error is not None:
        raise conn.error
    loop = conn._loop
    limit = None
    if read_timeout is not None:
        limit = loop.time() + read_timeout
    if deadline is not None and (limit is None or deadline < limit):
        limit = deadline
    timer = loop.call_at(limit, conn.timed_out) if limit is not None else None
    try:
        await conn.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if conn.error is not None:
        raise conn.error


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
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._open: set[_Connection] = set()
        # Per origin: connections open or being opened, and the calls waiting for one.
        self._count: dict[Origin, int] = {}
        self._waiters: dict[Origin, deque[asyncio.Future[_Connection | None]]] = {}
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

    def open_connections(self, url: str) -> int:
        """Connections open or being opened to `url`'s origin."""
        return self._count.get(_target(url).origin, 0)

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
        self, url: str, body: bytes, headers: bytes, timeouts: Timeouts = Timeouts()
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
                    await _wait(conn, deadline, timeouts.read)
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

    def _checkout(self, origin: Origin) -> tuple[_Connection | None, bool]:
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
    ) -> tuple[_Connection, bool]:
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
    ) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
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

    def _next_waiter(self, origin: Origin) -> asyncio.Future[_Connection | None] | None:
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

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        _, conn = await loop.create_connection(
            lambda: _Connection(loop),
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

    def _discard(self, origin: Origin, conn: _Connection) -> None:
        """Close `conn` and give its place on (once, however often it is discarded)."""
        conn.close()
        if conn in self._open:
            self._open.remove(conn)
            self._free(origin)

    def checkin(self, origin: Origin, conn: _Connection) -> None:
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
