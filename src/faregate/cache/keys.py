"""Exact-match cache keys: a request reduced to what changes the answer, written as sorted
JSON and hashed with blake2b. Who asked, streaming, and metadata never change the answer,
so they never enter the key; a namespace (e.g. a customer id) can isolate tenants."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}

# Parameters that change what comes back. Beyond sampling, anything that changes the body
# (logprobs) or the reasoning behind it (reasoning_effort) must split the key too.
PARAMS: dict[str, tuple[str, ...]] = {
    "chat": (
        "messages", *_SAMPLING, "n", "max_tokens", "stop", "seed", "tools", "tool_choice",
        "response_format", "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls",
        "functions", "function_call", "reasoning_effort", "verbosity", "modalities", "audio",
        "prediction", "web_search_options",
    ),
    "completions": (
        "prompt", *_SAMPLING, "n", "max_tokens", "stop", "seed", "logit_bias", "logprobs",
        "echo", "suffix", "best_of",
    ),
    "embeddings": ("input", "dimensions", "encoding_format"),
    "images": (
        "prompt", "n", "size", "quality", "style", "response_format", "steps", "background",
        "output_format", "output_compression",
    ),
}  # fmt: skip


def normalize(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The output-relevant view of a request body, with equivalent spellings unified."""
    try:
        params = PARAMS[kind]
    except KeyError:
        raise ValueError(f"no cache key for request kind {kind!r}") from None
    body = dict(body)
    if "max_completion_tokens" in body:
        body["max_tokens"] = body["max_completion_tokens"]
    if kind == "embeddings":
        body.setdefault("encoding_format", "float")
    view: dict[str, Any] = {"kind": kind, "model": body.get("model")}
    for name in params:
        value = body.get(name)
        if name in _SAMPLING and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        if name == "stop" and isinstance(value, str):
            value = [value]
        if value is None or _DEFAULTS.get(name) == value:
            continue
        view[name] = value
    return view


def _dumps(view: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(view, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
        return json.dumps(view, sort_keys=True, separators=(",", ":")).encode()


def cache_key(kind: str, body: dict[str, Any], namespace: str = "") -> str:
    digest = hashlib.blake2b(digest_size=20, person=b"faregate-cache1")
    digest.update(namespace.encode())
    digest.update(b"\x00")
    digest.update(_dumps(normalize(kind, body)))
    return f"{kind}:{digest.hexdigest()}"
