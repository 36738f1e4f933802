"""Anthropic-compatible inbound endpoints: `POST /v1/messages`, whatever provider serves the
model. The body is translated to the canonical (OpenAI) shape, run through the same
pipeline, and translated back; errors use Anthropic's error shape.
`POST /v1/messages/count_tokens` answers a request's input tokens without running it
(`Gateway.count_tokens`)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from faregate.api import anthropic_answer, anthropic_wire, validate
from faregate.api.common import REQUEST_ID, cost_comment, json_response, new_request_id
from faregate.api.errors import internal_error
from faregate.api.openai import begin_call
from faregate.errors import FaregateError, NotFound
from faregate.gateway.call import Call


def _canonical(body: dict[str, Any]) -> str:
    """Validate as Anthropic, then swap the body for its OpenAI equivalent in place."""
    translated = anthropic_wire.request_to_openai(body)
    body.clear()
    body.update(translated)
    return validate.chat_request(body, stop_limit=None)


def _canonical_count(body: dict[str, Any]) -> str:
    """`_canonical` for a count_tokens request, which has no max_tokens."""
    translated = anthropic_wire.count_request_to_openai(body)
    body.clear()
    body.update(translated)
    return validate.chat_request(body)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _headers(call: Call) -> dict[str, str]:
    """The pipeline's headers, and `request-id`, where the anthropic SDK reads `_request_id`."""
    return {**call.response_headers, "request-id": call.request_id}


def _error(err: FaregateError, request_id: str | None) -> web.Response:
    headers = dict(err.headers)
    if request_id:
        headers["request-id"] = request_id
        headers["x-faregate-request-id"] = request_id
    return json_response(
        anthropic_answer.error_body(err.status, err.message, err.code),
        status=err.status,
        headers=headers,
    )


async def messages(request: web.Request) -> web.StreamResponse:
    try:
        services, call = await begin_call(request, "chat", _canonical)
        if not call.stream:
            result = await services.gateway.chat(call)
            body = anthropic_answer.response_from_openai(result.body, call.model)
            return json_response(body, headers=_headers(call))
        return await _stream(request, services.gateway, call)
    except FaregateError as err:
        return _error(err, request.get(REQUEST_ID))
    except Exception:  # the last resort, in Anthropic's error shape as every other error here
        request_id = request.get(REQUEST_ID)
        return _error(internal_error(request_id, request.path), request_id)


async def count_tokens(request: web.Request) -> web.Response:
    try:
        services, call = await begin_call(request, "chat", _canonical_count)
        tokens = await services.gateway.count_tokens(call)
        headers = {"request-id": call.request_id, "x-faregate-request-id": call.request_id}
        if call.deployment is not None:
            headers["x-faregate-deployment"] = call.deployment.id
        headers["x-faregate-token-count"] = "estimate" if call.deployment is None else "upstream"
        return json_response({"input_tokens": tokens}, headers=headers)
    except FaregateError as err:
        return _error(err, request.get(REQUEST_ID))
    except Exception:
        request_id = request.get(REQUEST_ID)
        return _error(internal_error(request_id, request.path), request_id)


async def _stream(request: web.Request, gateway: Any, call: Call) -> web.StreamResponse:
    chunks = gateway.chat_stream(call)
    first = await chunks.__anext__()
    # The first chunk is in: an upstream that reports usage early (Claude) has done so.
    state = call.stream_state
    translator = anthropic_answer.StreamTranslator(call.model, state.reported if state else None)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            **_headers(call),
        }
    )
    await response.prepare(request)
    try:
        chunk: dict[str, Any] | None = first
        while chunk is not None:
            for name, data in translator.feed(chunk):
                await response.write(_event(name, data))
            chunk = await anext(chunks, None)
        *events, last = translator.finish(call.usage, call.scratch.get("finish_reason"))
        for name, data in events:
            await response.write(_event(name, data))
        await response.write(cost_comment(call.cost, call.price, call.attempts) + _event(*last))
    except FaregateError as err:
        await response.write(
            cost_comment(call.cost, call.price, call.attempts)
            + _event("error", anthropic_answer.error_body(err.status, err.message, err.code))
        )
    except (ConnectionResetError, OSError):
        pass
    finally:
        await chunks.aclose()
    return response


async def unknown(request: web.Request) -> web.Response:
    """Any other path under /v1/messages/ (batches, …): Anthropic's 404, not OpenAI's."""
    request_id = request[REQUEST_ID] = new_request_id()
    return _error(NotFound("Not Found", code="not_found"), request_id)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_route("*", "/v1/messages/{path:.*}", unknown)
