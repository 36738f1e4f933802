"""OpenAI `POST /v1/moderations`: flags inputs that contain a word from a short list, in the
shape of OpenAI's moderation response (all thirteen categories, scores, input types).
"""

from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import web

from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.pipeline import Call, json_response

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# A word in the input flags these categories.
FLAGGED_WORDS = {
    "attack": ("violence",),
    "kill": ("violence", "harassment/threatening"),
    "bomb": ("illicit", "illicit/violent"),
    "hate": ("hate",),
    "harass": ("harassment",),
    "suicide": ("self-harm",),
}
_WORD = re.compile(r"[a-z]+")


async def moderations(call: Call) -> web.StreamResponse:
    texts = _texts(call.body.get("input"))
    model = call.body.get("model") or "omni-moderation-latest"
    await call.pause()
    return json_response(
        {
            "id": "modr-" + os.urandom(12).hex(),
            "model": model,
            "results": [_result(t) for t in texts],
        }
    )


def _texts(value: Any) -> list[str]:
    """One text per input: a string, a list of strings, or one multimodal list of parts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return value
        if all(isinstance(item, dict) for item in value):
            return ["\n".join(str(p.get("text", "")) for p in value if p.get("type") == "text")]
    raise MockError(400, "'input' must be a string or an array of strings or parts.", param="input")


def _result(text: str) -> dict[str, Any]:
    hits: set[str] = set()
    for word in _WORD.findall(text.lower()):
        for trigger, categories in FLAGGED_WORDS.items():
            if word.startswith(trigger):
                hits.update(categories)
    return {
        "flagged": bool(hits),
        "categories": {c: c in hits for c in CATEGORIES},
        "category_scores": {c: 0.97 if c in hits else 0.0001 for c in CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
    }
