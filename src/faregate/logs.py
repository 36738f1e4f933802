"""Structured JSON logs: one object per line with the request id, never a secret or a body.
The request id comes from a context variable bound where the request id is made, so every
line logged while a request is handled carries it without being passed by hand."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}
_SECRET_WORDS = ("key", "authorization", "secret", "token", "password")
# Field names that contain a secret word but hold no secret.
_NOT_SECRET = frozenset({"key_id", "key_prefix", "input_tokens", "output_tokens"})

# Bound per request by the API (one aiohttp task per request, so one context per request);
# tasks created while handling a request inherit it, as they should.
_REQUEST_ID: ContextVar[str | None] = ContextVar("faregate_request_id", default=None)


def bind_request_id(request_id: str) -> None:
    """Every log line written from here on in this request's context carries `request_id`."""
    _REQUEST_ID.set(request_id)


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD or name.startswith("_"):
                continue
            lowered = name.lower()
            if any(w in lowered for w in _SECRET_WORDS) and lowered not in _NOT_SECRET:
                value = "[redacted]"
            data[name] = value
        if data.get("request_id") is None:
            request_id = _REQUEST_ID.get()
            if request_id is not None:
                data["request_id"] = request_id
        if record.exc_info:
            data["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
