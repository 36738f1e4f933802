"""The listening socket's HTTP/1.1 front: the hot endpoints served on a lean protocol,
everything else by aiohttp on the same connection.

Chat completions and embeddings are most of the traffic, and aiohttp's request and response
objects, middleware chain and writer cost more CPU per request than the rest of a bare
proxy. Here a connection starts on `_Connection`, which serves a request itself only when
it is plainly one of those: `POST` of an exact hot path over HTTP/1.1, token-only header
names, one `Content-Length` within the body limit, no `Transfer-Encoding`, `Expect` or
`Upgrade`. Anything else (another path, a chunked body, a malformed or merely unusual head)
hands the connection, with every byte not yet answered, to aiohttp's own protocol, which
keeps it from then on: aiohttp parses, limits and answers it exactly as if it had accepted
the connection. So the two never disagree about where a request ends.

The hot handlers are the same as aiohttp's (api.openai): the same call set-up, pipeline, SSE
blocks and error bodies; only the reading and writing differ.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from faregate import inflight
from faregate.api import openai, validate
from faregate.api.common import new_request_id
from faregate.api.errors import count_error, error_headers, internal_error
from faregate.api.state import SERVICES, Services
from faregate.errors import FaregateError

log = logging.getLogger("faregate.api")

MAX_HEAD = 64 * 1024  # a longer head goes to aiohttp, which refuses it properly
IDLE_TIMEOUT = 75.0  # seconds a kept-alive connection may wait for its next request (aiohttp's)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header names that passed `_TOKEN`, as written, with their lower-case form: a client sends
# the same few names on every request, so each is checked once. Bounded, so that names a
# client makes up cannot grow it without end; past the bound a new name is checked each time.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 1024

Route = Callable[["_Connection", dict[str, str], bytes], Awaitable[None]]


class _Date:
    """The Date header's value, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.value = formatdate(second, usegmt=True).encode()
        return cls.value


@functools.cache
def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:  # a status code with no registered phrase (an upstream's 529, say)
        reason = b"Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


_SERVER = b"\r\nServer: faregate\r\n\r\n"


def _head(status: int, headers: Mapping[str, str], extra: bytes, *rest: bytes) -> bytes:
    """A response's head, `extra` (its framing headers) last, then `rest` (what follows the
    head in the same write), as one bytes object. The headers are joined by C loops (`map`
    of `": ".join`), with no Python step per header: the head of a chat answer (12
    headers) and its body went from ~34,000 instructions to ~22,000."""
    named = "\r\n".join(map(": ".join, headers.items())).encode()
    return b"".join(
        (
            _status_line(status),
            named,
            b"\r\n" if named else b"",
            extra,
            b"Date: ",
            _Date.now(),
            _SERVER,
            *rest,
        )
    )


def parse_head(head: bytes) -> tuple[str, dict[str, str], int, bool] | None:
    """(target, headers by lower-case name, Content-Length, close after) of a request head this
    front serves, or None for anything aiohttp should answer.

    The head is decoded once (UTF-8, undecodable bytes kept as surrogates, as aiohttp reads a
    value), not name by name and value by value; a name is checked and lower-cased once per
    process (`_NAMES`). 4 headers cost ~45,000 instructions before, ~29,000 after."""
    if head.find(b"\x00") >= 0:  # not `in`: see SSEDecoder.feed
        return None
    breaks = head.count(b"\n")  # every CR and every LF must be one of the CRLFs
    if head.count(b"\r") != breaks:
        return None
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    if len(lines) - 1 != breaks:
        return None
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    if method != "POST" or version != "HTTP/1.1":
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        key = _NAMES.get(name)
        if key is None:
            if _TOKEN.fullmatch(name) is None:
                return None
            key = name.lower()
            if len(_NAMES) < _MAX_NAMES:
                _NAMES[name] = key
        text = value.strip(" \t")
        if key in headers:
            if key in ("content-length", "host", "authorization"):
                return None
            text = f"{headers[key]}, {text}"
        headers[key] = text
    length = headers.get("content-length", "")
    if (
        not (length.isascii() and length.isdigit())
        or "transfer-encoding" in headers
        or "expect" in headers
        or "upgrade" in headers
    ):
        return None
    close = "close" in headers.get("connection", "").lower()
    return target, headers, int(length), close


class _Connection(asyncio.Protocol):
    __slots__ = (
        "buffer",
        "busy",
        "closed",
        "drained",
        "front",
        "head_sent",
        "idle_since",
        "in_flight",
        "loop",
        "paused_reading",
        "task",
        "transport",
        "write_paused",
    )

    def __init__(self, front: Front) -> None:
        self.front = front
        # Made by the loop for a new connection. Kept: on Python 3.11 asyncio's
        # get_running_loop() (and current_task()) make a getpid() system call each time.
        self.loop = asyncio.get_running_loop()
        self.in_flight = inflight.of_loop(self.loop)  # the loop's requests (faregate.inflight)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closed = False
        self.paused_reading = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle_since = time.monotonic()
        self.head_sent = False
        self.task: asyncio.Task[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.connections.discard(self)
        self._wake_writer(ConnectionResetError("the client closed the connection"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()
        elif len(self.buffer) > MAX_HEAD and not self.paused_reading:
            self.paused_reading = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    # eof_received: the default, so a client's FIN closes the connection (as with aiohttp)
    # and a stream notices a client gone at its next write.

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer(None)

    def _wake_writer(self, exc: Exception | None) -> None:
        waiter, self.drained = self.drained, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    # requests

    def _next(self) -> None:
        buffer = self.buffer
        if not buffer:
            return
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD or not buffer.startswith(b"POST /"[: len(buffer)]):
                self._hand_off()
            return
        parsed = parse_head(bytes(buffer[:end]))
        route = self.front.routes.get(parsed[0]) if parsed is not None else None
        if parsed is None or route is None or parsed[2] > self.front.max_body:
            self._hand_off()
            return
        _, headers, length, close = parsed
        start = end + 4
        if len(buffer) < start + length:
            return  # the body is still arriving
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        self.busy = True
        self.head_sent = False
        self.in_flight.enter()
        # Held here: the loop keeps only a weak reference to a task.
        self.task = self.loop.create_task(self._serve(route, headers, body, close))

    async def _serve(self, route: Route, headers: dict[str, str], body: bytes, close: bool) -> None:
        try:
            await route(self, headers, body)
        except Exception:  # a route answers its own errors; this is the last resort
            log.exception("front: unhandled error")
            close = True
        finally:
            self.in_flight.leave()
        self.busy = False
        self.idle_since = time.monotonic()
        transport = self.transport
        if self.closed or transport is None:
            return
        if close or transport.is_closing():
            transport.close()
            return
        if self.paused_reading:
            self.paused_reading = False
            transport.resume_reading()
        self._next()

    def _hand_off(self) -> None:
        """Give the connection, and what it has sent that was not answered, to aiohttp."""
        transport = self.transport
        assert transport is not None
        self.front.connections.discard(self)
        handler = self.front.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data, self.buffer = bytes(self.buffer), bytearray()
        if self.paused_reading:
            self.paused_reading = False
            transport.resume_reading()
        if data:
            handler.data_received(data)

    # responses

    def respond(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        """A whole JSON response (dropped if the client has gone)."""
        if self.closed or self.transport is None:
            return
        length = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        self.head_sent = True
        self.transport.write(_head(status, headers, length, body))

    def start_stream(self, headers: Mapping[str, str], first: bytes, *, last: bool) -> None:
        """A chunked response's head with its first block (and its end, if `last`)."""
        self._check_open()
        self.head_sent = True
        self.transport.write(  # type: ignore[union-attr]
            _head(200, headers, _CHUNKED, b"%x\r\n" % len(first), first, _LAST if last else _CRLF)
        )

    async def write_chunk(self, block: bytes, *, last: bool = False) -> None:
        """One block (and the response's end, if `last`: one write, not two)."""
        self._check_open()
        self.transport.write(  # type: ignore[union-attr]
            b"".join((b"%x\r\n" % len(block), block, _LAST if last else _CRLF))
        )
        if self.write_paused:
            self.drained = self.loop.create_future()
            await self.drained

    def end_stream(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(_END)

    def _check_open(self) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")

    def fail(self, err: FaregateError, request_id: str | None) -> None:
        """Answer an error: as a response if nothing was sent yet, else by closing."""
        count_error(self.front.app, err)
        if self.head_sent:
            if self.transport is not None:
                self.transport.close()
            return
        self.respond(err.status, orjson.dumps(err.body()), error_headers(err, request_id))


# A chunked body: each block after its size line and before a CRLF; the end, a block of 0.
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CRLF = b"\r\n"
_END = b"0\r\n\r\n"
_LAST = _CRLF + _END  # a last block's CRLF and the body's end, in the same write


class Front:
    """The hot routes and what every connection shares."""

    def __init__(self, app: web.Application, server: web.Server, max_body: int) -> None:
        self.app = app
        self.aiohttp_protocol = server  # calling it makes aiohttp's protocol for a connection
        self.max_body = max_body
        self.connections: set[_Connection] = set()
        self.routes: dict[str, Route] = {
            "/v1/chat/completions": _chat,
            "/v1/embeddings": _embeddings,
        }

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    def protocol(self) -> _Connection:
        return _Connection(self)

    def close_idle(self, older_than: float = 0.0) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            if not conn.busy and now - conn.idle_since >= older_than and conn.transport:
                conn.transport.close()

    @property
    def busy(self) -> int:
        return sum(1 for conn in self.connections if conn.busy)


async def _unary(
    conn: _Connection, headers: dict[str, str], raw: bytes, kind: str, check: openai.Check
) -> None:
    request_id = new_request_id()
    services = conn.front.services
    try:
        call = await openai.open_call(services, request_id, headers, raw, kind, check)
        if call.stream and kind == "chat":
            await _stream(conn, services, call)
            return
        gateway = services.gateway
        result = await (gateway.chat(call) if kind == "chat" else gateway.embeddings(call))
        conn.respond(200, orjson.dumps(result.body), call.response_headers)
    except FaregateError as err:
        conn.fail(err, request_id)
    except Exception:
        conn.fail(internal_error(request_id, f"/v1/{kind}"), request_id)


async def _stream(conn: _Connection, services: Services, call: Any) -> None:
    chunks = openai.chat_chunks(services, call)
    first = await chunks.__anext__()  # errors before the first chunk keep their HTTP status
    # The headers as they stand at the first chunk, however long the first block takes.
    headers = {**openai.STREAM_HEADERS, **call.response_headers}
    blocks = openai.sse_blocks(call, chunks, first)
    try:
        # The stream's last block (it ends with [DONE]) goes out with the body's end.
        block = await anext(blocks)
        ended = block.endswith(openai.DONE)
        conn.start_stream(headers, block, last=ended)
        async for block in blocks:
            ended = block.endswith(openai.DONE)
            await conn.write_chunk(block, last=ended)
        if not ended:
            conn.end_stream()
    except (ConnectionResetError, OSError):
        pass  # the client went away; closing the generators cancels the upstream call
    finally:
        await blocks.aclose()


async def _chat(conn: _Connection, headers: dict[str, str], raw: bytes) -> None:
    await _unary(conn, headers, raw, "chat", validate.chat_request)


async def _embeddings(conn: _Connection, headers: dict[str, str], raw: bytes) -> None:
    await _unary(conn, headers, raw, "embeddings", validate.embeddings_request)


class FrontSite(web.BaseSite):
    """A TCP site whose connections start on the front. Stopping it stops accepting, closes
    idle connections and lets requests in progress finish (up to `grace` seconds)."""

    __slots__ = ("_host", "_port", "_reuse_address", "_sweeper", "front", "grace")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_body: int,
        backlog: int = 1024,
        reuse_address: bool = True,
        grace: float = 30.0,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_address = reuse_address
        assert runner.server is not None
        self.front = Front(runner.app, runner.server, max_body)
        self.grace = grace
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.front.protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )
        self._sweeper = loop.create_task(self._sweep(), name="front-idle-sweep")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(IDLE_TIMEOUT / 5)
            self.front.close_idle(IDLE_TIMEOUT)

    async def stop(self) -> None:
        await super().stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.front.close_idle()
        deadline = time.monotonic() + self.grace
        while self.front.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.front.connections):
            if conn.transport is not None:
                conn.transport.close()
