"""The HTTP/1.1 front (api.front) on raw sockets: what it serves itself, what it hands to
aiohttp on the same connection, and that a connection survives both; and, on a recording
transport, how a stream's blocks become writes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from faregate import inflight
from faregate.api import front
from faregate.api.front import _head as response_head
from faregate.api.front import parse_head
from faregate.auth.principal import Principal
from faregate.gateway.call import Call
from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from faregate.providers.base import StreamState

from .conftest import Running, start_gateway

CHAT = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
)


def post(key: str, body: bytes, path: str = "/v1/chat/completions", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return status, headers, body
    return status, headers, await reader.readexactly(int(headers["content-length"]))


async def connect(gw: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.settings.port)


async def exchange(gw: Running, *data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` on a new connection; the one response, and the connection closed."""
    reader, writer = await connect(gw)
    writer.writelines(data)
    try:
        return await read_response(reader)
    finally:
        writer.close()


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_pipelined_requests_are_answered_in_order(gateway: Running) -> None:
    reader, writer = await connect(gateway)
    bad = post("wrong-key", CHAT)
    writer.write(post(gateway.key, CHAT) + bad + post(gateway.key, CHAT))
    answers = [await read_response(reader) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 401, 200]
    assert orjson.loads(answers[0][2])["object"] == "chat.completion"
    assert orjson.loads(answers[1][2])["error"]["type"] == "authentication_error"
    assert answers[1][1]["x-faregate-request-id"].startswith("req_")
    assert all("date" in a[1] for a in answers)
    writer.close()


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_a_body_arriving_byte_by_byte(gateway: Running) -> None:
    reader, writer = await connect(gateway)
    for byte in post(gateway.key, CHAT):
        writer.write(bytes([byte]))
        await writer.drain()
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["choices"]
    writer.close()


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_other_paths_hand_the_connection_to_aiohttp(gateway: Running) -> None:
    reader, writer = await connect(gateway)
    writer.write(post(gateway.key, CHAT))
    assert (await read_response(reader))[0] == 200
    # a GET of another endpoint, pipelined with a chat request behind it
    models = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.key}\r\n\r\n"
    writer.write(models.encode() + post(gateway.key, CHAT))
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "list"
    status, _, body = await read_response(reader)  # answered by aiohttp, same handler code
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"
    writer.close()


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_unusual_requests_get_aiohttps_answers(gateway: Running) -> None:
    # a chunked body
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.key}"
        "\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    status, _, body = await exchange(gateway, head, b"%x\r\n%b\r\n0\r\n\r\n" % (len(CHAT), CHAT))
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    # a header name with a space in it
    status, _, _ = await exchange(gateway, post(gateway.key, CHAT, extra="Bad Name: 1\r\n"))
    assert status == 400
    # a body over the limit: aiohttp refuses once it has read past the limit
    size = gateway.settings.max_body_bytes + 1
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
        f"Authorization: Bearer {gateway.key}\r\n\r\n"
    ).encode()
    status, _, body = await exchange(gateway, head, b"x" * size)
    assert status == 413 and orjson.loads(body)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_connection_close_is_honoured(gateway: Running) -> None:
    reader, writer = await connect(gateway)
    writer.write(post(gateway.key, CHAT, extra="Connection: close\r\n"))
    assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed it
    writer.close()


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_streams_are_chunked_and_a_client_can_leave_mid_stream(gateway: Running) -> None:
    reader, writer = await connect(gateway)
    writer.write(post(gateway.key, STREAM))
    status, headers, body = await read_response(reader)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert body.endswith(b"data: [DONE]\n\n") and b": x-faregate-cost " in body
    # same connection, then leave after the head
    writer.write(post(gateway.key, STREAM))
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    await asyncio.sleep(0.2)
    # the gateway still serves
    reader, writer = await connect(gateway)
    writer.write(post(gateway.key, CHAT))
    assert (await read_response(reader))[0] == 200
    writer.close()


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
async def test_many_concurrent_connections(gateway: Running) -> None:
    async def one() -> list[int]:
        reader, writer = await connect(gateway)
        statuses = []
        for _ in range(5):
            writer.write(post(gateway.key, CHAT))
            statuses.append((await read_response(reader))[0])
        writer.close()
        return statuses

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert all(s == [200] * 5 for s in results)


async def test_stopping_lets_requests_in_progress_finish(tmp_path: Path, mock: MockServer) -> None:
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", mock)
    mock.config.deployments["openai"] = MockBehaviour(latency=0.5)
    reader, writer = await connect(gw)
    idle_reader, idle_writer = await connect(gw)  # a kept-alive connection with nothing to do
    writer.write(post(gw.key, CHAT))
    await asyncio.sleep(0.2)  # the request is waiting on the upstream
    stopping = asyncio.ensure_future(gw.runner.cleanup())
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""  # closed, not left hanging
    await stopping
    with pytest.raises(OSError):
        await connect(gw)  # no longer listening
    writer.close()
    idle_writer.close()


def _head(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    "head",
    [
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "Content-Length: 2"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", " folded"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: +2"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "Expect: 100-continue"),
        _head("POST /v1/chat/completions HTTP/1.1", "Transfer-Encoding: chunked"),
        _head("POST /v1/chat/completions HTTP/1.0", "Content-Length: 2"),
        _head("GET /v1/chat/completions HTTP/1.1"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2\nX: 1"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "X: a\rb"),
        _head("POST /v1/chat/completions HTTP/1.1"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "Bad Name: x"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", ": x"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "no colon"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "Host: a", "host: b"),
        _head("POST /v1/chat/completions HTTP/1.1", "Content-Length: 2", "X: \x00"),
    ],
)
def test_heads_the_front_leaves_to_aiohttp(head: bytes) -> None:
    assert parse_head(head) is None


def test_a_plain_head() -> None:
    parsed: Any = parse_head(
        _head(
            "POST /v1/chat/completions HTTP/1.1",
            "Host: x",
            "X-Faregate-Tags: a",
            "x-faregate-tags: b",
            "Content-Length:  12 ",
            "Connection: keep-alive, close",
            "Authorization:Bearer k\t",
            "X-Empty:",
            "X-Text: caf\u00e9 a:b ",
        )
    )
    target, headers, length, close = parsed
    assert target == "/v1/chat/completions" and length == 12 and close
    assert headers["x-faregate-tags"] == "a, b" and headers["host"] == "x"
    assert headers["authorization"] == "Bearer k" and headers["x-empty"] == ""
    assert headers["x-text"] == "caf\u00e9 a:b"


def test_a_header_name_is_checked_once_and_its_memo_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(front, "_NAMES", {})
    request = "POST /v1/chat/completions HTTP/1.1"
    assert parse_head(_head(request, "Content-Length: 2", "X-Seen: 1")) is not None
    assert "X-Seen" in front._NAMES
    # A known name still needs its colon, and a name never seen is still checked.
    assert parse_head(_head(request, "Content-Length: 2", "X-Seen")) is None
    assert parse_head(_head(request, "Content-Length: 2", "X{Bad}: 1")) is None
    for i in range(front._MAX_NAMES + 10):
        parsed: Any = parse_head(_head(request, "Content-Length: 2", f"X-Made-Up-{i}: v"))
        assert parsed[1][f"x-made-up-{i}"] == "v"
    assert len(front._NAMES) <= front._MAX_NAMES


def test_a_status_with_no_registered_phrase() -> None:
    head = bytes(response_head(529, {"x-a": "1"}, b"Content-Length: 0\r\n"))
    assert head.startswith(b"HTTP/1.1 529 Unknown\r\nx-a: 1\r\nContent-Length: 0\r\n")
    assert head.endswith(b"\r\n\r\n")


class _Transport:
    """Records what the front writes, as one bytes object per `write` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _chunk_stream(marks: list[bool]) -> tuple[Any, Any]:
    """A front connection on a recording transport, and services whose gateway streams one
    chunk per mark: True when the next chunk (or the stream's end) follows at once."""
    conn = front._Connection.__new__(front._Connection)
    conn.transport, conn.closed, conn.head_sent, conn.write_paused = (
        _Transport(),
        False,
        False,
        False,
    )
    body = {"model": "m", "stream": True, "messages": [], "stream_options": {"include_usage": True}}
    call = Call("req_1", Principal("k", "p"), "chat", "m", body, stream=True)

    class Gateway:
        async def chat_stream(self, call: Call, *, relay: bool = False) -> Any:
            state = call.stream_state = StreamState(relay=relay)
            call.response_headers["x-faregate-request-id"] = call.request_id
            for n, more in enumerate(marks):
                state.more = more
                yield {"choices": [{"index": 0, "delta": {"content": str(n)}}], "usage": None}
                await asyncio.sleep(0)

    class Services:
        gateway = Gateway()

    return conn, (Services(), call)


async def test_a_stream_that_arrived_whole_is_written_in_one_write() -> None:
    conn, (services, call) = _chunk_stream([True, True, True])
    await front._stream(conn, services, call)
    [whole] = conn.transport.writes
    head, _, body = whole.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and body.endswith(b"\r\n0\r\n\r\n")
    assert body.count(b"data: {") == 3 and b"data: [DONE]" in body


async def test_a_stream_with_a_wait_writes_what_arrived_before_it_at_once() -> None:
    conn, (services, call) = _chunk_stream([True, False, True])
    await front._stream(conn, services, call)
    first, last = conn.transport.writes
    assert first.count(b"data: {") == 2  # the head and the chunks before the wait
    assert last.count(b"data: {") == 1 and last.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")


async def test_requests_in_flight_are_counted_on_both_fronts(
    tmp_path: Path, mock: MockServer
) -> None:
    """What the batched writers' clock reads (faregate.inflight): a request counts from the
    moment it is taken until it is answered, on the lean front and on aiohttp's alike, and
    the count falling to zero is a lull."""
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", mock)
    count = inflight.of_loop(asyncio.get_running_loop())
    try:
        mock.config.deployments["openai"] = MockBehaviour(latency=0.4)
        lulls = count.lulls
        hot_reader, hot_writer = await connect(gw)
        hot_writer.write(post(gw.key, CHAT))
        # A chunked body: handed to aiohttp, which serves it through its middleware.
        aio_reader, aio_writer = await connect(gw)
        aio_writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.key}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"{len(CHAT):x}\r\n".encode()
            + CHAT
            + b"\r\n0\r\n\r\n"
        )
        for _ in range(100):
            if count.requests == 2:
                break
            await asyncio.sleep(0.01)
        assert count.requests == 2  # both waiting on the upstream
        assert count.lulls == lulls
        for reader in (hot_reader, aio_reader):
            status, _, body = await read_response(reader)
            assert status == 200 and orjson.loads(body)["object"] == "chat.completion"
        for _ in range(100):
            if not count.requests:
                break
            await asyncio.sleep(0.01)
        assert count.requests == 0
        assert count.lulls == lulls + 1  # one lull: the two were in flight together
        hot_writer.close()
        aio_writer.close()
    finally:
        await gw.runner.cleanup()
