"""Exact-match cache keys: a request reduced to what changes the answer, written as sorted
JSON and hashed with blake2b. Who asked, streaming, and metadata never change the answer,
so they never enter the key; every other field does. A namespace (e.g. a customer id) can
isolate tenants."""

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

# The kinds of request a key can be made for: those whose answer depends on the body alone.
KINDS = frozenset({"chat", "completions", "embeddings", "images"})
# Fields that never change what comes back: which model is named apart (it is in the view),
# how the answer is delivered (stream), who asked and what is stored about the request. Every
# other field enters the key, those faregate does not know included: they reach the upstream
# (an OpenAI-compatible host's `top_k` or `guided_json`, say) and may change its answer.
IGNORED = frozenset(
    {
        "model", "stream", "stream_options", "user", "metadata", "store", "service_tier",
        "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    }
)  # fmt: skip


def normalize(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """The output-relevant view of a request body, with equivalent spellings unified."""
    if kind not in KINDS:
        raise ValueError(f"no cache key for request kind {kind!r}")
    body = dict(body)
    if "max_completion_tokens" in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    if kind == "embeddings":
        body.setdefault("encoding_format", "float")
    view: dict[str, Any] = {"kind": kind, "model": body.get("model")}
    for name, value in body.items():
        if name in IGNORED:
            continue
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
