"""The HTTP/1.1 client for the JSON and SSE calls to upstream providers: keep-alive
connections pooled per origin, asyncio protocols, responses parsed by llhttp (httptools).

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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

# A stream's unread body above this pauses reading from the socket until it is consumed.
_HIGH_WATER = 256 * 1024
_KEEPALIVE = 30.0  # seconds an idle connection stays in the pool
_MAX_IDLE = 256  # idle connections kept per origin


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
    origin: tuple[str, str, int]  # scheme, host, port: the pool's key
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
        origin: tuple[str, str, int],
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
    upstream of the app. Connections are opened on demand, without a cap; an idle one is
    reused last-in first-out and closed after 30 s."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._open: set[_Connection] = set()
        self._closed = False
        # The loop its connections belong to, from the first call on: on Python 3.11
        # asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

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
        for attempt in range(2):
            conn, reused = self._checkout(target.origin) if attempt == 0 else (None, False)
            if conn is None:
                conn = await self._connect(loop, target.origin, timeouts.connect)
            try:
                conn.send(data)
                while not conn.headers_done:
                    await _wait(conn, deadline, timeouts.read)
                return Response(conn, self, target.origin, deadline, timeouts.read)
            except ConnectionResetError:
                conn.close()
                self._open.discard(conn)
                if reused and not conn.received:
                    # A stale keep-alive connection: the request never got there. Its idle
                    # siblings likely went the same way (an upstream restart): drop them
                    # and try once more on a new connection.
                    self._drop_idle(target.origin)
                    continue
                raise
            except BaseException:  # cancelled, timed out, or an answer it cannot decode
                conn.close()
                self._open.discard(conn)
                raise
        raise ConnectionResetError("the upstream closed the connection")

    def _checkout(self, origin: tuple[str, str, int]) -> tuple[_Connection | None, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > _KEEPALIVE:
                conn.close()
                self._open.discard(conn)
                continue
            return conn, True
        return None, False

    def _drop_idle(self, origin: tuple[str, str, int]) -> None:
        for conn in self._idle.pop(origin, ()):
            conn.close()
            self._open.discard(conn)

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, origin: tuple[str, str, int], timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(loop),
                host,
                port,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
        self._open.add(conn)
        return conn

    def checkin(self, origin: tuple[str, str, int], conn: _Connection) -> None:
        if self._closed or not conn.reusable():
            conn.close()
            self._open.discard(conn)
            return
        idle = self._idle.setdefault(origin, deque())
        if len(idle) >= _MAX_IDLE:
            conn.close()
            self._open.discard(conn)
            return
        conn.busy = False
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def close(self) -> None:
        """Close every connection, idle or in use; later posts fail."""
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
