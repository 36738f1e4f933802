"""The one error tree: every expected failure carries its HTTP status, OpenAI `type` and a
stable `code`. Packages subclass these in their own errors.py; api/errors.py renders them."""

from __future__ import annotations

from typing import Any


class FaregateError(Exception):
    """Base of every error that reaches a client as an OpenAI-shaped JSON body."""

    status: int = 500
    type: str = "api_error"
    code: str = "internal_error"
    # Set by failover on the error it gives up with: the upstream calls made for the
    # request and the last deployment called (routing/failover.py).
    attempts: int = 0
    last_deployment: Any = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(FaregateError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(FaregateError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class InsufficientCredits(FaregateError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_credits"


class PermissionDenied(FaregateError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(FaregateError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(FaregateError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(FaregateError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Unprocessable(FaregateError):
    status = 422
    type = "invalid_request_error"
    code = "validation_errors"


class RateLimited(FaregateError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(FaregateError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class ServiceUnavailable(FaregateError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamTimeout(FaregateError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"
