"""`GET /v1/models`: the model list in OpenAI's shape, or Anthropic's when the caller sends an
`anthropic-version` header (both providers serve this path). Every route accepts any model
name; this list only names the usual ones.
"""

from __future__ import annotations

from aiohttp import web

from faregate.mockprovider.pipeline import Call, json_response

CREATED = 1_700_000_000
OPENAI_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "gpt-image-1",
    "dall-e-3",
    "omni-moderation-latest",
)
ANTHROPIC_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")


async def list_models(call: Call) -> web.StreamResponse:
    if "anthropic-version" in call.request.headers:
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name.replace("-", " ").title(),
                "created_at": "2025-01-01T00:00:00Z",
            }
            for name in ANTHROPIC_MODELS
        ]
        return json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )
    models = [
        {"id": name, "object": "model", "created": CREATED, "owned_by": "system"}
        for name in OPENAI_MODELS
    ]
    return json_response({"object": "list", "data": models})
