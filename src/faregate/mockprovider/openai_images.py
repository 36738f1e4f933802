"""OpenAI `POST /v1/images/generations` and the files it links to: real solid-colour PNGs of the
requested size, as base64 or as URLs served by `GET /v1/files/images/{id}.png`. gpt-image
models also report token usage, priced like OpenAI's (per quality, scaled by area).
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from aiohttp import web

from faregate.mockprovider import checks
from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.pipeline import Call, json_response
from faregate.mockprovider.png import MAX_SIDE, Colour, colour_for, solid_png
from faregate.mockprovider.tokens import count_tokens

FILES_PATH = "/v1/files/images/{image}.png"
DEFAULT_SIZE = "1024x1024"
QUALITIES = frozenset({"standard", "hd", "low", "medium", "high", "auto"})
# gpt-image output tokens for one 1024x1024 image, by quality.
_IMAGE_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "hd": 4160}
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_IMAGE_ID = re.compile(r"^img-(\d{1,5})x(\d{1,5})-([0-9a-f]{6})$")


async def generations(call: Call) -> web.StreamResponse:
    body = call.body
    prompt = checks.required_str(body, "prompt")
    model = body.get("model") or "dall-e-2"
    n = checks.optional_int(body, "n", maximum=10) or 1
    checks.optional_int(body, "steps", maximum=1000)
    width, height = _size(body.get("size"))
    quality = body.get("quality") or "auto"
    if quality not in QUALITIES:
        raise MockError(400, f"Invalid quality '{quality}'.", param="quality")
    gpt_image = str(model).startswith("gpt-image")
    fmt = body.get("response_format") or ("b64_json" if gpt_image else "url")
    if fmt not in ("url", "b64_json"):
        raise MockError(
            400, "'response_format' must be 'url' or 'b64_json'.", param="response_format"
        )
    colour = colour_for(prompt)
    if fmt == "b64_json":
        encoded = base64.b64encode(solid_png(width, height, colour)).decode()
        item: dict[str, Any] = {"b64_json": encoded, "revised_prompt": prompt}
    else:
        image_id = f"img-{width}x{height}-{bytes(colour).hex()}"
        url = f"{call.request.url.origin()}{FILES_PATH.format(image=image_id)}"
        item = {"url": url, "revised_prompt": prompt}
    payload: dict[str, Any] = {"created": int(time.time()), "data": [dict(item) for _ in range(n)]}
    if gpt_image:
        payload.update(background="opaque", output_format="png", quality=quality)
        payload["size"] = f"{width}x{height}"
        payload["usage"] = _usage(prompt, quality, width, height, n)
    await call.pause()
    return json_response(payload)


async def image_file(call: Call) -> web.StreamResponse:
    match = _IMAGE_ID.match(call.request.match_info["image"])
    if match is None:
        raise MockError(404, "No such image.")
    width, height = int(match[1]), int(match[2])
    raw = bytes.fromhex(match[3])
    colour: Colour = (raw[0], raw[1], raw[2])
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise MockError(404, "No such image.")
    return web.Response(body=solid_png(width, height, colour), content_type="image/png")


def _size(value: Any) -> tuple[int, int]:
    if value is None or value == "auto":
        value = DEFAULT_SIZE
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise MockError(400, "'size' must look like '1024x1024'.", param="size")
    width, height = int(match[1]), int(match[2])
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise MockError(400, f"Image sides must be between 1 and {MAX_SIDE}.", param="size")
    return width, height


def _usage(prompt: str, quality: str, width: int, height: int, n: int) -> dict[str, Any]:
    text = count_tokens(prompt)
    per_image = round(_IMAGE_TOKENS.get(quality, 1056) * width * height / (1024 * 1024))
    output = per_image * n
    return {
        "input_tokens": text,
        "input_tokens_details": {"text_tokens": text, "image_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
        "total_tokens": text + output,
    }
