"""OpenAI-compatible endpoints: chat completions (JSON and SSE), embeddings, images, models."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from faregate.api import validate
from faregate.api.common import (
    REQUEST_ID,
    bearer_key,
    cost_comment,
    json_response,
    key_from_headers,
    new_request_id,
    parse_json_object,
    read_body,
)
from faregate.api.state import SERVICES, Services
from faregate.auth.principal import Principal
from faregate.errors import FaregateError, NotFound
from faregate.gateway.call import Call
from faregate.logs import bind_request_id
from faregate.providers.base import Relayed

log = logging.getLogger("faregate.api")

DONE = b"data: [DONE]\n\n"  # a chat stream's last event


def _tags(
    headers: Mapping[str, str], body: dict[str, Any], key_tags: tuple[str, ...]
) -> tuple[str, ...]:
    tags = list(key_tags)
    header = headers.get("x-faregate-tags")
    if header:
        tags.extend(t.strip() for t in header.split(",") if t.strip())
    meta = body.get("metadata")
    if isinstance(meta, dict):
        value = meta.get("tags")
        if isinstance(value, str):
            tags.extend(t.strip() for t in value.split(",") if t.strip())
        elif isinstance(value, list):
            tags.extend(str(t) for t in value)
    return tuple(dict.fromkeys(tags))


Check = Callable[[dict[str, Any]], str]


async def begin_call(request: web.Request, kind: str, check: Check) -> tuple[Services, Call]:
    """Authenticate, read and validate the body: everything before the pipeline."""
    services = request.app[SERVICES]
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    bind_request_id(request_id)
    principal = await services.keys.authenticate(bearer_key(request))
    raw = await read_body(request)
    return services, make_call(request_id, principal, request.headers, raw, kind, check)


async def open_call(
    services: Services,
    request_id: str,
    headers: Mapping[str, str],
    raw: bytes,
    kind: str,
    check: Check,
) -> Call:
    """`begin_call` for a request whose body has already been read (api.front)."""
    bind_request_id(request_id)
    principal = await services.keys.authenticate(key_from_headers(headers))
    return make_call(request_id, principal, headers, raw, kind, check)


def make_call(
    request_id: str,
    principal: Principal,
    headers: Mapping[str, str],
    raw: bytes,
    kind: str,
    check: Check,
) -> Call:
    """Parse and validate the body of an authenticated request. `headers` answers lower-case
    names (aiohttp's headers answer any case)."""
    body = parse_json_object(raw)
    model = check(body)
    return Call(
        request_id=request_id,
        principal=principal,
        kind=kind,
        model=model,
        body=body,
        stream=bool(body.get("stream")),
        tags=_tags(headers, body, principal.tags),
        request_headers=_forwarded(headers),
    )


_FORWARDED = ("x-faregate-", "cache-control")


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers the pipeline reads (faregate's own, Cache-Control), by lower-case
    name."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key.startswith(_FORWARDED):
            out[key] = value
    return out


async def chat_completions(request: web.Request) -> web.StreamResponse:
    services, call = await begin_call(request, "chat", validate.chat_request)
    if call.stream:
        return await _stream_chat(request, services, call)
    result = await services.gateway.chat(call)
    return json_response(result.body, headers=call.response_headers)


def _cost(call: Call) -> bytes:
    return cost_comment(call.cost, call.price, call.attempts)


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def wants_usage(call: Call) -> bool:
    """Whether the client asked for the usage chunk (`stream_options.include_usage`)."""
    options = call.body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def chat_chunks(services: Services, call: Call) -> AsyncIterator[Any]:
    """The gateway's stream for this call. When the client asked for usage, the chunks an
    OpenAI-format upstream sent may come as `Relayed` runs, written as received: the
    gateway relays the usage chunk too, so nothing in them needs changing."""
    return services.gateway.chat_stream(call, relay=wants_usage(call))


async def _stream_chat(request: web.Request, services: Services, call: Call) -> web.StreamResponse:
    chunks = chat_chunks(services, call)
    first = await chunks.__anext__()  # errors before the first chunk keep their HTTP status
    response = web.StreamResponse(headers={**STREAM_HEADERS, **call.response_headers})
    await response.prepare(request)
    blocks = sse_blocks(call, chunks, first)
    try:
        async for block in blocks:
            await response.write(block)
    except (ConnectionResetError, OSError):
        pass  # the client went away; closing the generators cancels the upstream call
    finally:
        await blocks.aclose()
    return response


async def sse_blocks(
    call: Call, chunks: AsyncIterator[Any], first: Any
) -> AsyncGenerator[bytes, None]:
    """A chat stream's body as SSE, one block per write: the chunks of one upstream read
    together, then the cost comment and `[DONE]`. An upstream failure mid-stream ends it with
    an error event. Closing this closes `chunks` (and so the upstream call)."""
    usage = wants_usage(call)
    state = call.stream_state
    pending: list[bytes] = []  # chunks of one upstream read, sent in one write
    try:
        chunk = first
        while True:
            if type(chunk) is Relayed:
                pending.append(chunk.data)
            elif usage or chunk.get("choices"):
                if not usage:
                    chunk.pop("usage", None)
                pending.append(_sse(chunk))
            if pending and not (state is not None and state.more):
                yield b"".join(pending)
                pending.clear()
            try:  # not anext(chunks, None): that wraps every step in one more awaitable
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
        pending += [_cost(call), DONE]
        yield b"".join(pending)
    except FaregateError as err:  # the upstream failed mid-stream: end with an error event
        pending += [_sse(err.body()), _cost(call), DONE]
        yield b"".join(pending)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def embeddings(request: web.Request) -> web.Response:
    services, call = await begin_call(request, "embeddings", validate.embeddings_request)
    result = await services.gateway.embeddings(call)
    return json_response(result.body, headers=call.response_headers)


async def images_generations(request: web.Request) -> web.Response:
    services, call = await begin_call(request, "images", validate.images_request)
    result = await services.gateway.images(call)
    return json_response(result.body, headers=call.response_headers)


async def moderations(request: web.Request) -> web.Response:
    services, call = await begin_call(request, "moderations", validate.moderations_request)
    if not call.model:
        call.model = next(
            (n for n, g in services.settings.models.items() if g.kind == "moderations"), ""
        )
        if not call.model:
            raise NotFound(
                "No moderation model is configured.", param="model", code="model_not_found"
            )
    result = await services.gateway.moderations(call)
    return json_response(result.body, headers=call.response_headers)


def _model_entry(name: str, owned_by: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


async def list_models(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    principal = await services.keys.authenticate(bearer_key(request))
    data = [
        _model_entry(name, group.owned_by, services.started_at)
        for name, group in services.settings.models.items()
        if principal.allows(name)
    ]
    return json_response({"object": "list", "data": data})


async def retrieve_model(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    principal = await services.keys.authenticate(bearer_key(request))
    name = request.match_info["model"]
    try:
        group = services.router.resolve(name)
    except NotFound:
        raise NotFound(
            f"The model {name!r} does not exist.", param="model", code="model_not_found"
        ) from None
    if not principal.allows(group.name) and not principal.allows(name):
        raise NotFound(f"The model {name!r} does not exist.", param="model", code="model_not_found")
    return json_response(_model_entry(name, group.owned_by, services.started_at))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/images/generations", images_generations)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
