"""One HTTP/1.1 exchange on one keep-alive connection: the asyncio protocol that sends a
POST and parses its answer with llhttp (httptools), and the `Response` read from it, whole
or as it arrives, within a total deadline and a timeout between reads. The pool that opens,
lends and caps these connections is `transport.HttpTransport`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from faregate.providers.transport import HttpTransport, Origin

# A stream's unread body above this pauses reading from the socket until it is consumed.
_HIGH_WATER = 256 * 1024


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


class Connection(asyncio.Protocol):
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

    @property
    def paused(self) -> bool:
        """Whether reading from the socket waits for the buffered body to be taken."""
        return self._paused

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
        conn: Connection,
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

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (what is left to read is buffered)."""
        return self._conn.complete

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or its first bytes once `limit` of them have arrived."""
        conn = self._conn
        parts: list[bytes] = []
        taken = 0
        while not conn.complete and (limit is None or taken + conn.buffered < limit):
            if conn.paused:  # past the high-water mark: keep what came, let the socket go on
                taken += conn.buffered
                parts.append(conn.take())
            await wait_event(conn, self._deadline, self._read)
        parts.append(conn.take())
        data = self._decode(parts[0] if len(parts) == 1 else b"".join(parts), final=conn.complete)
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
            await wait_event(conn, self._deadline, self._read)

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


async def wait_event(conn: Connection, deadline: float | None, read_timeout: float | None) -> None:
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
