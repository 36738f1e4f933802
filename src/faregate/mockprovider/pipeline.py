"""The path every emulated call takes: read the JSON (or multipart) body, count it, apply the deployment's
hang, key check and injected faults, then run the wire format's handler and render its
`MockError` in that provider's shape. Wire formats never repeat these steps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from faregate.mockprovider.config import DEFAULT_DEPLOYMENT, MockBehaviour
from faregate.mockprovider.dialects import Dialect, MockError
from faregate.mockprovider.faults import Fault
from faregate.mockprovider.multipart import read_form
from faregate.mockprovider.state import STATE, MockState
from faregate.mockprovider.stream import SSE, EventStream, StreamAborted

DEPLOYMENT_PREFIX = "/d/{deployment}"
_HANG_POLL = 0.05


@dataclass(slots=True)
class Call:
    """One request as a wire-format handler sees it."""

    request: web.Request
    body: dict[str, Any]
    behaviour: MockBehaviour

    async def pause(self, chunks: int = 0) -> None:
        """Wait as long as a whole (non-streamed) reply of `chunks` tokens takes."""
        delay = self.behaviour.full_reply_delay(chunks)
        if delay > 0:
            await asyncio.sleep(delay)

    def stream(self, content_type: str = SSE) -> EventStream:
        return EventStream(self.request, self.behaviour, content_type)


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
StreamTest = Callable[[web.Request, dict[str, Any]], bool]


def _body_streams(request: web.Request, body: dict[str, Any]) -> bool:
    return body.get("stream") is True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route: `path` is also its name in the stats. Ungated routes skip keys and faults."""

    method: str
    path: str
    dialect: Dialect
    handler: Handler
    gated: bool = True
    streams: StreamTest = _body_streams


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def route_table(endpoints: Iterable[Endpoint]) -> list[web.RouteDef]:
    """Every endpoint at its plain path and under the `/d/{deployment}` prefix."""
    table = []
    for endpoint in endpoints:
        handler = make_handler(endpoint)
        for path in (endpoint.path, DEPLOYMENT_PREFIX + endpoint.path):
            table.append(web.route(endpoint.method, path, handler))
    return table


def make_handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    dialect = endpoint.dialect

    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        deployment = request.match_info.get("deployment", DEFAULT_DEPLOYMENT)
        behaviour = state.config.behaviour_for(deployment)
        try:
            body = await _read_body(request)
        except MockError as exc:
            state.stats.record(deployment, endpoint.path, _model_of(request, {}))
            return dialect.error_response(exc)
        state.stats.record(deployment, endpoint.path, _model_of(request, body))
        try:
            if endpoint.gated:
                early = await _gate(endpoint, request, body, behaviour, state, deployment)
                if early is not None:
                    return early
            return await endpoint.handler(Call(request, body, behaviour))
        except MockError as exc:
            return dialect.error_response(exc)
        except StreamAborted as exc:
            return exc.response

    return handle


async def _gate(
    endpoint: Endpoint,
    request: web.Request,
    body: dict[str, Any],
    behaviour: MockBehaviour,
    state: MockState,
    deployment: str,
) -> web.StreamResponse | None:
    """Hang, key check, then one fault draw; None lets the request through."""
    if behaviour.hang:
        await _hang(request, state.closing)
        return web.Response(status=503)
    if behaviour.require_key is not None:
        given = endpoint.dialect.api_key(request)
        if given != behaviour.require_key:
            raise endpoint.dialect.key_error(given)
    fault = state.dice.roll(deployment, behaviour)
    if fault is Fault.NONE:
        return None
    if fault is Fault.MALFORMED:
        return endpoint.dialect.malformed_response(endpoint.streams(request, body))
    raise endpoint.dialect.fault_error(fault, behaviour)


async def _hang(request: web.Request, closing: asyncio.Event) -> None:
    """Never answer: return only once the client has gone or the server is shutting down."""
    while not closing.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), _HANG_POLL)


async def _read_body(request: web.Request) -> dict[str, Any]:
    if request.method != "POST":
        return {}
    if request.content_type == "multipart/form-data":
        return await read_form(request)
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MockError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise MockError(400, "The request body must be a JSON object.")
    return body


def _model_of(request: web.Request, body: dict[str, Any]) -> str:
    """The model named in the path (Gemini) or in the body (OpenAI, Anthropic)."""
    model = request.match_info.get("model") or body.get("model")
    return model if isinstance(model, str) else ""
