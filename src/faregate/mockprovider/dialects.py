"""How each provider says no: error bodies, API-key headers and truncated bodies per wire format.

OpenAI `{"error": {message, type, param, code}}`, Anthropic `{"type": "error", "error":
{type, message}}`, Google `{"error": {code, message, status}}`. Handlers raise `MockError`
with an HTTP status; the route's dialect renders it. No request handling lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.faults import Fault


class MockError(Exception):
    """A failure the mock answers with; `code` is OpenAI's stable code where it has one."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        retry_after_ms: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    body: Callable[[MockError], dict[str, Any]]
    api_key: Callable[[web.Request], str | None]
    messages: Mapping[Fault, tuple[int, str]]
    truncated_json: bytes
    truncated_sse: bytes
    key_error: Callable[[str | None], MockError]

    def error_response(self, error: MockError) -> web.Response:
        headers = {}
        if error.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
            if self.name != "google" and error.retry_after_ms:
                headers["retry-after-ms"] = str(round(error.retry_after * 1000))
        return web.Response(
            status=error.status,
            body=orjson.dumps(self.body(error)),
            content_type="application/json",
            headers=headers,
        )

    def fault_error(self, fault: Fault, behaviour: MockBehaviour) -> MockError:
        status, message = self.messages[fault]
        retry_after = behaviour.retry_after if fault is Fault.RATE_LIMIT else None
        code = "rate_limit_exceeded" if fault is Fault.RATE_LIMIT else None
        return MockError(
            status,
            message,
            code=code,
            retry_after=retry_after,
            retry_after_ms=behaviour.retry_after_ms,
        )

    def malformed_response(self, streaming: bool) -> web.Response:
        if streaming:
            return web.Response(body=self.truncated_sse, content_type="text/event-stream")
        return web.Response(body=self.truncated_json, content_type="application/json")


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    return value[7:] if value[:7].lower() == "bearer " else None


_OPENAI_TYPES = {
    401: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}


def _openai_body(error: MockError) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(error.status, "invalid_request_error")
    return {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}
    }


def _openai_key_error(given: str | None) -> MockError:
    if given is None:
        message = "You didn't provide an API key. Provide it in the Authorization header."
    else:
        message = "Incorrect API key provided."
    return MockError(401, message, code="invalid_api_key")


OPENAI = Dialect(
    name="openai",
    body=_openai_body,
    api_key=_bearer,
    messages={
        Fault.SERVER_ERROR: (500, "The server had an error while processing your request."),
        Fault.UNAVAILABLE: (503, "The server is overloaded or not ready yet."),
        Fault.RATE_LIMIT: (429, "Rate limit reached for requests. Please try again later."),
        Fault.BAD_REQUEST: (400, "Invalid value for 'messages': the request was refused."),
    },
    truncated_json=b'{"id":"chatcmpl-mock","object":"chat.completion","created":17',
    truncated_sse=b'data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","cho\n\n',
    key_error=_openai_key_error,
)


_ANTHROPIC_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _anthropic_body(error: MockError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(error.status, "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def _anthropic_key(request: web.Request) -> str | None:
    return request.headers.get("x-api-key") or _bearer(request)


def _anthropic_key_error(given: str | None) -> MockError:
    return MockError(401, "invalid x-api-key")


ANTHROPIC = Dialect(
    name="anthropic",
    body=_anthropic_body,
    api_key=_anthropic_key,
    messages={
        Fault.SERVER_ERROR: (500, "Internal server error"),
        Fault.UNAVAILABLE: (529, "Overloaded"),
        Fault.RATE_LIMIT: (429, "Number of requests has exceeded your rate limit."),
        Fault.BAD_REQUEST: (400, "messages: the request was refused."),
    },
    truncated_json=b'{"id":"msg_mock","type":"message","role":"assist',
    truncated_sse=b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_\n\n',
    key_error=_anthropic_key_error,
)


_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def _google_body(error: MockError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": _GOOGLE_STATUSES.get(error.status, "UNKNOWN"),
    }
    if error.retry_after is not None:
        delay = f"{max(1, math.ceil(error.retry_after))}s"
        body["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        ]
    return {"error": body}


def _google_key(request: web.Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query.get("key")


def _google_key_error(given: str | None) -> MockError:
    if given is None:
        return MockError(403, "Method doesn't allow unregistered callers. Please use an API key.")
    return MockError(400, "API key not valid. Please pass a valid API key.")


GOOGLE = Dialect(
    name="google",
    body=_google_body,
    api_key=_google_key,
    messages={
        Fault.SERVER_ERROR: (500, "An internal error has occurred. Please retry."),
        Fault.UNAVAILABLE: (503, "The model is overloaded. Please try again later."),
        Fault.RATE_LIMIT: (429, "Resource has been exhausted (e.g. check quota)."),
        Fault.BAD_REQUEST: (400, "Request contains an invalid argument."),
    },
    truncated_json=b'{"candidates":[{"content":{"parts":[{"text":"Lor',
    truncated_sse=b'data: {"candidates":[{"content":{"parts":[{"te\n\n',
    key_error=_google_key_error,
)
