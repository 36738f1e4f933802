"""The upstream HTTP/1.1 client: keep-alive reuse, stale connections, cut and malformed
answers, content encodings, timeouts, and how its failures become ProviderErrors."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from faregate.config import ConfigError
from faregate.providers.base import Endpoint, ProviderError
from faregate.providers.http import Upstream, map_exceptions
from faregate.providers.http1 import Headers, PayloadError, ProtocolError, Timeouts, header_block
from faregate.providers.transport import HttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = header_block({"Content-Type": "application/json"})
NO_LIMITS = Timeouts()


async def _request(reader: asyncio.StreamReader) -> bytes:
    """One request off the wire: its head, then its Content-Length of body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def _answer(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[tuple[str, list[int]]]]]:
    """Start a raw TCP server running `handler` per connection; yields (url, connections)."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[str, list[int]]:
        connections: list[int] = []

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(1)
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/x?q=1", connections

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.close()


async def _post(
    transport: HttpTransport, url: str, timeouts: Timeouts = NO_LIMITS, body: bytes = b'{"a": 1}'
) -> bytes:
    response = await transport.post(url, body, HEADERS, timeouts)
    try:
        return await response.read()
    finally:
        response.release()


@pytest.fixture
async def echo_server() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Start an aiohttp app answering POST /echo with the request's body (after `delay`),
    over TLS with `ssl_context`; yields its port."""
    runners: list[web.AppRunner] = []

    async def start(delay: float = 0.0, ssl_context: ssl.SSLContext | None = None) -> int:
        async def echo(request: web.Request) -> web.Response:
            await asyncio.sleep(delay)
            return web.Response(body=await request.read(), content_type="application/json")

        app = web.Application()
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr,no-any-return]

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_keep_alive_connection_carries_every_request_in_turn(serve, transport) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await _request(reader))
            writer.write(_answer(b'{"ok": true}'))

    url, connections = await serve(handler)
    for _ in range(3):
        assert await _post(transport, url) == b'{"ok": true}'
    assert len(connections) == 1
    assert seen[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 8\r\n\r\n" in seen[0] and seen[0].endswith(b'{"a": 1}')


async def test_a_pooled_connection_the_upstream_closed_is_replaced_once(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(_answer(b"first"))  # keep-alive implied, then the server hangs up
        await writer.drain()

    url, connections = await serve(handler)
    assert await _post(transport, url) == b"first"
    await asyncio.sleep(0.05)  # the close reaches the pooled connection… or not yet
    assert await _post(transport, url) == b"first"
    assert len(connections) == 2


async def test_a_fresh_connection_closed_before_any_answer_is_unreachable(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)  # then close without a word

    url, _ = await serve(handler)
    with pytest.raises(ProviderError) as caught, map_exceptions():
        await _post(transport, url)
    assert caught.value.code == "upstream_unreachable" and caught.value.retryable


async def test_a_body_cut_short_is_a_cut_stream(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()

    url, _ = await serve(handler)
    with pytest.raises(PayloadError):
        await _post(transport, url)
    with pytest.raises(ProviderError) as caught, map_exceptions():
        await _post(transport, url)
    assert caught.value.code == "upstream_disconnected"


async def test_an_answer_that_is_not_http_is_a_bad_response(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    url, _ = await serve(handler)
    with pytest.raises(ProtocolError):
        await _post(transport, url)
    with pytest.raises(ProviderError) as caught, map_exceptions():
        await _post(transport, url)
    assert caught.value.code == "upstream_bad_response"


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("identity", lambda b: b)],
)
async def test_compressed_and_chunked_bodies_arrive_decoded(
    serve, transport, encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    body = b'{"text": "' + b"otters " * 2000 + b'"}'
    packed = pack(body)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                + f"Content-Encoding: {encoding}\r\n\r\n".encode()
            )
            for i in range(0, len(packed), 1000):
                piece = packed[i : i + 1000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")

    url, connections = await serve(handler)
    assert await _post(transport, url) == body
    response = await transport.post(url, b"{}", HEADERS)
    try:
        assert b"".join([block async for block in response.iter_any()]) == body
    finally:
        response.release()
    assert len(connections) == 1  # a chunked answer read to its end leaves the connection reusable


async def test_a_stalled_answer_times_out_between_reads(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    url, _ = await serve(handler)
    response = await transport.post(url, b"{}", HEADERS, Timeouts(read=0.2))
    blocks = []
    with pytest.raises(ProviderError) as caught, map_exceptions():
        try:
            async for block in response.iter_any():
                blocks.append(block)
        finally:
            response.release()
    assert blocks == [b"abc"]
    assert caught.value.code == "upstream_timeout"


async def test_the_total_timeout_bounds_the_whole_answer(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:  # never idle long enough for a read timeout, never done
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    url, _ = await serve(handler)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await _post(transport, url, Timeouts(total=0.3, read=0.2))
    assert asyncio.get_running_loop().time() - started < 2


async def test_an_answer_released_unread_closes_its_connection(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _request(reader)
            answer = _answer(b"x" * 10, status="500 Internal Server Error")
            writer.write(answer[:-5])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(answer[-5:])

    url, connections = await serve(handler)
    response = await transport.post(url, b"{}", HEADERS)
    assert response.status == 500
    response.release()  # before its body is complete
    assert await _post(transport, url) == b"x" * 10
    assert len(connections) == 2


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_whole_answer_larger_than_the_read_buffer_arrives_in_full(
    serve, transport, chunked: bool
) -> None:
    """A body past the high-water mark that pauses a stream's reading (embeddings of many
    inputs, images as base64), sent over many writes: `read()` takes it all, where it used
    to wait with the socket paused until the timeout."""
    body = b"[" + b",".join(b'"%06d"' % i for i in range(200_000)) + b"]"  # ~1.8 MB

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _request(reader)
            if chunked:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for start in range(0, len(body), 16_384):
                piece = body[start : start + 16_384]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                await asyncio.sleep(0)
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()

    url, connections = await serve(handler)
    for _ in range(2):
        assert await _post(transport, url, Timeouts(total=10)) == body
    assert len(connections) == 1  # read to its end, the connection went back to the pool


async def test_an_error_body_is_read_up_to_its_limit(serve, transport) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"400\r\n" + b"e" * 1024 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    url, _ = await serve(handler)
    response = await transport.post(url, b"{}", HEADERS, Timeouts(total=5))
    try:
        assert response.headers.get("retry-after") == response.headers["Retry-After"] == "7"
        assert len(await response.read(4096)) == 4096
    finally:
        response.release()


async def test_a_closed_transport_closes_its_connections_and_refuses_posts(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _request(reader)
            writer.write(_answer(b"ok"))

    url, _ = await serve(handler)
    transport = HttpTransport()
    assert await _post(transport, url) == b"ok"
    await transport.close()
    with pytest.raises(ConnectionError):
        await _post(transport, url)


async def test_the_connection_is_refused_when_nothing_listens(transport) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ProviderError) as caught, map_exceptions():
        await _post(transport, f"http://127.0.0.1:{port}/")
    assert caught.value.code == "upstream_unreachable"


def test_a_header_with_a_line_break_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError):
        header_block({"X-Team": "a\r\nX-Injected: 1"})
    endpoint = Endpoint(name="evil", wire="openai", base_url="http://h", headers=(("X-A", "b\nc"),))
    with pytest.raises(ConfigError, match="evil"):
        Upstream(endpoint, None, {}, lambda body: None, HttpTransport())  # type: ignore[arg-type]


def test_response_headers_are_read_in_any_case() -> None:
    headers = Headers({"retry-after-ms": "250", "content-type": "application/json"})
    assert headers.get("Retry-After-Ms") == "250"
    assert "Content-Type" in headers and headers["CONTENT-TYPE"] == "application/json"
    assert headers.get("x-missing") is None


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_is_verified_against_the_trusted_certificates(
    tmp_path: Path, echo_server
) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    port = await echo_server(ssl_context=server_context)
    trusted = HttpTransport(ssl.create_default_context(cafile=str(cert)))
    untrusted = HttpTransport(ssl.create_default_context())  # the system's CAs only
    try:
        for host in ("localhost", "127.0.0.1"):
            assert await _post(trusted, f"https://{host}:{port}/echo") == b'{"a": 1}'
        with pytest.raises(ssl.SSLError):
            await _post(untrusted, f"https://localhost:{port}/echo")
        with pytest.raises(ProviderError) as caught, map_exceptions():
            await _post(untrusted, f"https://localhost:{port}/echo")
        assert caught.value.code == "upstream_unreachable"
    finally:
        await trusted.close()
        await untrusted.close()


async def test_many_concurrent_posts_each_get_their_own_answer(transport, echo_server) -> None:
    url = f"http://127.0.0.1:{await echo_server(delay=0.01)}/echo"
    for _ in range(2):  # the second round reuses the first round's connections
        answers = await asyncio.gather(
            *(_post(transport, url, body=b'{"n": %d}' % i) for i in range(200))
        )
        assert answers == [b'{"n": %d}' % i for i in range(200)]
    assert 0 < len(transport._open) <= 200


async def test_after_an_upstream_restart_the_next_post_opens_one_new_connection(
    serve, transport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        await asyncio.sleep(0.05)  # keep every connection busy until all are open
        writer.write(_answer(b"ok"))  # then the server hangs up: every pooled one is stale
        await writer.drain()

    url, connections = await serve(handler)
    assert await asyncio.gather(*(_post(transport, url) for _ in range(5))) == [b"ok"] * 5
    await asyncio.sleep(0.05)
    assert await _post(transport, url) == b"ok"  # no failure for the five dead ones
    assert len(connections) == 6


async def test_an_answer_in_an_unknown_encoding_is_refused_and_its_connection_closed(
    serve, transport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        writer.write(_answer(b"??", "Content-Encoding: br"))
        await writer.drain()
        await asyncio.sleep(1)

    url, _ = await serve(handler)
    with pytest.raises(ProtocolError):
        await _post(transport, url)
    assert not transport._open and not any(transport._idle.values())


def _pooled(transport: HttpTransport, url: str) -> int:
    """Connections open or being opened to `url`'s origin, as the pool reports them."""
    origin = url.split("/v1", 1)[0]
    return sum(count for name, count, _ in transport.pools() if name == origin)


async def _counting_server(serve, delay: float, *, keep_alive: bool = True):
    """A server that answers after `delay` and records the most connections open at once."""
    state = {"open": 0, "peak": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            while True:
                await _request(reader)
                await asyncio.sleep(delay)
                if not keep_alive:
                    writer.write(_answer(b"ok", "Connection: close"))
                    await writer.drain()
                    return
                writer.write(_answer(b"ok"))
                await writer.drain()
        finally:
            state["open"] -= 1

    url, connections = await serve(handler)
    return url, connections, state


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_at_its_cap_an_origin_gets_no_more_connections_and_every_call_its_answer(
    serve, keep_alive: bool
) -> None:
    transport = HttpTransport(max_connections=4)
    url, connections, state = await _counting_server(serve, 0.01, keep_alive=keep_alive)
    try:
        answers = await asyncio.gather(*(_post(transport, url) for _ in range(64)))
        assert answers == [b"ok"] * 64
        assert state["peak"] <= 4
        # Kept-alive connections are handed from call to call; closed ones give their
        # place to the next call, which opens a new one.
        assert len(connections) == (4 if keep_alive else 64)
        assert _pooled(transport, url) == (4 if keep_alive else 0)
    finally:
        await transport.close()


async def test_a_call_waiting_past_its_connect_timeout_fails_and_its_place_is_not_lost(
    serve,
) -> None:
    transport = HttpTransport()
    url, connections, state = await _counting_server(serve, 0.3)
    transport.limit(url, 2)
    transport.limit(url, 5)  # the lowest cap given for an origin applies
    try:
        slow = [asyncio.create_task(_post(transport, url)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):  # both connections busy for 0.3 s
            await _post(transport, url, Timeouts(connect=0.05))
        with pytest.raises(ProviderError) as caught, map_exceptions():
            await _post(transport, url, Timeouts(connect=0.05))
        assert caught.value.status == 504
        assert await asyncio.gather(*slow) == [b"ok", b"ok"]
        # The calls that gave up took nothing with them: two places, both reusable.
        assert await asyncio.gather(_post(transport, url), _post(transport, url)) == [b"ok"] * 2
        assert len(connections) == 2 and state["peak"] == 2
        assert _pooled(transport, url) == 2
    finally:
        await transport.close()


async def test_a_waiting_call_cancelled_as_its_turn_comes_passes_the_connection_on(
    serve,
) -> None:
    transport = HttpTransport(max_connections=1)
    url, connections, _ = await _counting_server(serve, 0.01)
    try:
        response = await transport.post(url, b"{}", HEADERS, NO_LIMITS)  # the one connection
        assert await response.read() == b"ok"
        doomed = asyncio.create_task(_post(transport, url))
        third = asyncio.create_task(_post(transport, url))
        await asyncio.sleep(0.02)  # both wait for it
        response.release()  # it goes to `doomed`...
        doomed.cancel()  # ...cancelled before it could take it: it passes it on
        assert await third == b"ok"
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert len(connections) == 1 and _pooled(transport, url) == 1
    finally:
        await transport.close()


async def test_calls_waiting_for_a_connection_fail_when_the_transport_closes(serve) -> None:
    transport = HttpTransport(max_connections=1)
    url, _, _ = await _counting_server(serve, 0.2)
    busy = asyncio.create_task(_post(transport, url))
    await asyncio.sleep(0.02)
    waiting = asyncio.create_task(_post(transport, url))
    await asyncio.sleep(0.02)
    await transport.close()
    for task in (busy, waiting):
        with pytest.raises((ConnectionError, PayloadError)):
            await task


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        HttpTransport(max_connections=0)
    with pytest.raises(ValueError):
        HttpTransport().limit("http://example.test/v1", 0)
