"""OpenAI-compatible endpoints: chat completions (JSON and SSE), embeddings, images, models."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from faregate.api import validate
from faregate.api.common import (
    REQUEST_ID,
    bearer_key,
    cost_comment,
    json_response,
    new_request_id,
    read_json_object,
)
from faregate.api.state import SERVICES, Services
from faregate.errors import FaregateError, NotFound
from faregate.gateway.call import Call
from faregate.logs import bind_request_id

log = logging.getLogger("faregate.api")

_DONE = b"data: [DONE]\n\n"


def _tags(request: web.Request, body: dict[str, Any], key_tags: tuple[str, ...]) -> tuple[str, ...]:
    tags = list(key_tags)
    header = request.headers.get("X-Faregate-Tags")
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


async def begin_call(
    request: web.Request, kind: str, check: Callable[[dict[str, Any]], str]
) -> tuple[Services, Call]:
    """Authenticate, read and validate the body: everything before the pipeline."""
    services = request.app[SERVICES]
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    bind_request_id(request_id)
    principal = await services.keys.authenticate(bearer_key(request))
    body = await read_json_object(request)
    model = check(body)
    call = Call(
        request_id=request_id,
        principal=principal,
        kind=kind,
        model=model,
        body=body,
        stream=bool(body.get("stream")),
        tags=_tags(request, body, principal.tags),
        request_headers={
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith(("x-faregate-", "cache-control"))
        },
    )
    return services, call


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


async def _stream_chat(request: web.Request, services: Services, call: Call) -> web.StreamResponse:
    wants_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    chunks = services.gateway.chat_stream(call)
    first = await chunks.__anext__()  # errors before the first chunk keep their HTTP status
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            **call.response_headers,
        }
    )
    await response.prepare(request)
    state = call.stream_state
    pending: list[bytes] = []  # chunks of one upstream read, sent in one write
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            if wants_usage or chunk.get("choices"):
                if not wants_usage:
                    chunk.pop("usage", None)
                pending.append(_sse(chunk))
            if pending and not (state is not None and state.more):
                await response.write(b"".join(pending))
                pending.clear()
            chunk = await anext(chunks, None)
        pending += [_cost(call), _DONE]
        await response.write(b"".join(pending))
    except FaregateError as err:  # the upstream failed mid-stream: end with an error event
        pending += [_sse(err.body()), _cost(call), _DONE]
        await response.write(b"".join(pending))
    except (ConnectionResetError, OSError):
        pass  # the client went away; closing the generator cancels the upstream call
    finally:
        await chunks.aclose()
    return response


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
