"""Gemini `models/{model}:embedContent` and `:batchEmbedContents`: deterministic unit vectors
of `outputDimensionality` values (default 3072 for gemini-embedding models, else 768).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from faregate.mockprovider import checks
from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.gemini import field
from faregate.mockprovider.pipeline import Call, json_response
from faregate.mockprovider.vectors import embedding

MAX_DIMENSIONS = 3072


async def embed_content(call: Call) -> web.StreamResponse:
    model = call.request.match_info["model"]
    values = _embed(model, call.body, "content")
    await call.pause()
    return json_response({"embedding": {"values": values}})


async def batch_embed_contents(call: Call) -> web.StreamResponse:
    model = call.request.match_info["model"]
    requests = checks.required_list(call.body, "requests")
    embeddings = []
    for index, request in enumerate(requests):
        if not isinstance(request, dict):
            raise MockError(
                400, f"* BatchEmbedContentsRequest.requests[{index}]: must be an object"
            )
        embeddings.append({"values": _embed(model, request, f"requests[{index}].content")})
    await call.pause()
    return json_response({"embeddings": embeddings})


def _embed(model: str, request: Mapping[str, Any], where: str) -> tuple[float, ...]:
    content = request.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise MockError(400, f"* {where}: content with parts is required")
    text = "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
    default = MAX_DIMENSIONS if model.startswith("gemini-embedding") else 768
    size = {"outputDimensionality": field(request, "outputDimensionality")}
    dimensions = checks.optional_int(size, "outputDimensionality", maximum=MAX_DIMENSIONS)
    return embedding(text, dimensions or default)
