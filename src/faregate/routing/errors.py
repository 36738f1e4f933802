"""Routing's errors: unknown model, nothing healthy to send to, price ceiling, context size.
Each is a FaregateError so the API renders it; none is raised by a provider."""

from __future__ import annotations

import math

from faregate.errors import InvalidRequest, NotFound, ServiceUnavailable


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"The model {name!r} does not exist", param="model")


class NoHealthyDeployment(ServiceUnavailable):
    code = "no_healthy_deployment"

    def __init__(self, group: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"Every deployment of {group!r} is unavailable; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after = retry_after


class MaxPriceExceeded(InvalidRequest):
    code = "max_price_exceeded"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="max_price")


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(self, group: str, tokens: int) -> None:
        super().__init__(
            f"The request has about {tokens} input tokens, more than any deployment of "
            f"{group!r} (or its context-window fallbacks) accepts",
            param="messages",
        )
