"""The one place every failure becomes an OpenAI-shaped JSON response. Unknown exceptions
are logged with the request id and answered with a generic 500: no traceback, no secret."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from faregate import inflight
from faregate.api.common import REQUEST_ID
from faregate.errors import FaregateError, NotFound, PayloadTooLarge

if TYPE_CHECKING:
    from faregate.observability.metrics import GatewayMetrics

log = logging.getLogger("faregate.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Set at startup when metrics are on; error responses are counted in it.
METRICS: web.AppKey[GatewayMetrics] = web.AppKey("metrics")

_HTTP_CODES = {
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def error_headers(err: FaregateError, request_id: str | None) -> dict[str, str]:
    headers = dict(err.headers)
    if request_id:
        headers["x-faregate-request-id"] = headers["x-request-id"] = request_id
    return headers


def error_response(err: FaregateError, request_id: str | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(err.body()),
        status=err.status,
        content_type="application/json",
        headers=error_headers(err, request_id),
    )


def internal_error(request_id: str | None, path: str) -> FaregateError:
    """Log an unexpected exception (being handled) with the request id; the generic 500."""
    log.exception("unhandled error", extra={"request_id": request_id, "path": path})
    return FaregateError("The server had an error while processing your request.")


def _from_http_exception(exc: web.HTTPException) -> FaregateError:
    if exc.status == 413:
        return PayloadTooLarge("Request body is larger than the configured limit.")
    if exc.status == 404:
        return NotFound("Unknown path.", code="not_found")
    type_, code = _HTTP_CODES.get(exc.status, ("invalid_request_error", "http_error"))
    return FaregateError(exc.reason or "HTTP error", status=exc.status, type=type_, code=code)


def count_error(app: web.Application, err: FaregateError) -> None:
    """Count an error response in the app's metrics, when metrics are on."""
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.error_response(err.status, err.code)


def _counted(request: web.Request, err: FaregateError) -> web.Response:
    count_error(request.app, err)
    return error_response(err, request.get(REQUEST_ID))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as OpenAI-shaped bodies; and the request counted in flight while it is served
    (`faregate.inflight`), as the hot endpoints' front counts its own."""
    in_flight = inflight.of_loop(asyncio.get_running_loop())
    in_flight.enter()
    try:
        return await handler(request)
    except FaregateError as err:
        return _counted(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _counted(request, _from_http_exception(exc))
    except Exception:
        return _counted(request, internal_error(request.get(REQUEST_ID), request.path))
    finally:
        in_flight.leave()
