"""OpenAI `POST /v1/embeddings`: strings or token arrays in, deterministic unit vectors out,
as float lists or base64 float32 (`encoding_format`), sized by `dimensions` (default 1536).
OpenAI's limits hold: at most 2,048 inputs, 8,192 tokens each, 300,000 in all (400 past any).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faregate.mockprovider import checks
from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.pipeline import Call, json_response
from faregate.mockprovider.tokens import count_tokens
from faregate.mockprovider.vectors import as_base64, embedding

DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 4096
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000


async def embeddings(call: Call) -> web.StreamResponse:
    body = call.body
    model = checks.required_str(body, "model")
    inputs = _inputs(body.get("input"))
    dimensions = checks.optional_int(body, "dimensions", maximum=MAX_DIMENSIONS)
    dimensions = dimensions or DEFAULT_DIMENSIONS
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise MockError(
            400, "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    _check_limits(inputs)
    data = []
    tokens = 0
    for index, (key, cost) in enumerate(inputs):
        vector = embedding(key, dimensions)
        value: Any = as_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
        tokens += cost
    await call.pause()
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _inputs(value: Any) -> list[tuple[str, int]]:
    """Each input as (hash key, token count): a string, a token array, or a list of either."""
    if isinstance(value, str):
        return [_one(value)]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [_one(value)]
        if all(isinstance(v, str | list) for v in value):
            return [_one(v) for v in value]
    raise MockError(
        400, "'input' must be a non-empty string, array of strings or tokens.", param="input"
    )


def _check_limits(inputs: list[tuple[str, int]]) -> None:
    if len(inputs) > MAX_INPUTS:
        raise MockError(
            400, f"'input' must have at most {MAX_INPUTS} items; got {len(inputs)}.", param="input"
        )
    longest = max(cost for _, cost in inputs)
    if longest > MAX_INPUT_TOKENS:
        raise MockError(
            400,
            f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
            f"requested {longest} tokens ({longest} in your prompt; 0 for the completion). "
            "Please reduce your prompt; or completion length.",
            code="context_length_exceeded",
            param="input",
        )
    total = sum(cost for _, cost in inputs)
    if total > MAX_REQUEST_TOKENS:
        raise MockError(
            400,
            f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request.",
            code="max_tokens_per_request",
            param="input",
        )


def _one(value: str | list[Any]) -> tuple[str, int]:
    if isinstance(value, str):
        if not value:
            raise MockError(400, "'input' must not contain empty strings.", param="input")
        return value, count_tokens(value)
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise MockError(400, "Token arrays must be non-empty lists of integers.", param="input")
    return "tokens:" + ",".join(map(str, value)), len(value)
