"""Writes one streamed reply with the behaviour's timing: `ttft` before the first byte,
`chunk_delay` between events, and a dropped connection after `disconnect_after_chunks`.
Frame encoders for SSE live here too; what goes in the frames is the wire format's job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn

import orjson
from aiohttp import web

from faregate.mockprovider.config import MockBehaviour

SSE = "text/event-stream"
FrameFill = Callable[[Any], bytes]


class StreamAborted(Exception):
    """The stream ended early (dropped on purpose or by the client); answer with `response`."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__("stream aborted")
        self.response = response


def sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(event: bytes, payload: Any) -> bytes:
    return b"event: " + event + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


_HOLE = "\x00hole\x00"


def frame_template(payload: dict[str, Any], hole: str, prefix: bytes = b"data: ") -> FrameFill:
    """Encode `payload` once, leaving `hole` open; the result encodes only what fills it.

    Stream frames share all but one field, so this keeps a token's frame to one small dump.
    """
    encoded = orjson.dumps({**payload, hole: _HOLE})
    before, after = encoded.split(orjson.dumps(_HOLE), 1)
    head = prefix + before
    tail = after + b"\n\n"

    def fill(value: Any) -> bytes:
        return head + orjson.dumps(value) + tail

    return fill


class EventStream:
    """Sends frames; without delays or faults they go out in one write, for throughput."""

    __slots__ = ("_behaviour", "_buffer", "_content_type", "_request", "_response", "_sent")

    def __init__(self, request: web.Request, behaviour: MockBehaviour, content_type: str = SSE):
        self._request = request
        self._behaviour = behaviour
        self._content_type = content_type
        self._response = web.StreamResponse()
        self._sent = 0
        self._buffer: list[bytes] | None = None
        if behaviour.chunk_delay == 0 and behaviour.disconnect_after_chunks is None:
            self._buffer = []

    async def open(self) -> None:
        if self._behaviour.ttft > 0:
            await asyncio.sleep(self._behaviour.ttft)
        self._response.headers["Content-Type"] = self._content_type
        self._response.headers["Cache-Control"] = "no-cache"
        try:
            await self._response.prepare(self._request)
        except ConnectionResetError:
            raise StreamAborted(self._response) from None

    async def send(self, frame: bytes) -> None:
        limit = self._behaviour.disconnect_after_chunks
        if limit is not None and self._sent >= limit:
            self._drop()
        self._sent += 1
        if self._buffer is not None:
            self._buffer.append(frame)
            return
        if self._sent > 1 and self._behaviour.chunk_delay > 0:
            await asyncio.sleep(self._behaviour.chunk_delay)
        await self._write(frame)

    async def close(self) -> web.StreamResponse:
        if self._buffer:
            await self._write(b"".join(self._buffer))
        try:
            await self._response.write_eof()
        except ConnectionResetError:
            raise StreamAborted(self._response) from None
        return self._response

    async def _write(self, data: bytes) -> None:
        try:
            await self._response.write(data)
        except ConnectionResetError:
            raise StreamAborted(self._response) from None

    def _drop(self) -> NoReturn:
        transport = self._request.transport
        if transport is not None:
            transport.close()
        raise StreamAborted(self._response)
