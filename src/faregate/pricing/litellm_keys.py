"""Split a LiteLLM price-map key into model, image size, quality and step bracket.

LiteLLM puts image variants in the key, not in fields: `{quality}/{W}-x-{H}/{model}`,
`{W}-x-{H}/{model}`, `{W}-x-{H}/{N}-steps/{model}`, `max-x-max/max-steps/{model}`, with an
optional provider prefix (`azure/high/1024-x-1024/gpt-image-1`); a segment before the size
is a quality only when it is one of OpenAI's quality names. A leading segment equal to the
entry's `litellm_provider` is dropped from the model name (`azure/gpt-4o` -> `gpt-4o`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = re.compile(r"^(\d+)-x-(\d+)$")
_STEPS = re.compile(r"^(\d+)-steps$")
MAX = "max"
QUALITIES = frozenset({"standard", "hd", "low", "medium", "high", "auto"})


@dataclass(frozen=True, slots=True)
class KeyParts:
    model: str
    size: str | None = None  # "WxH" or "*" (max-x-max); None for a plain model key
    quality: str | None = None
    steps: int | str | None = None  # step bracket: N, "max", or None

    @property
    def is_variant(self) -> bool:
        return self.size is not None or self.steps is not None


def split_key(key: str, provider: str | None) -> KeyParts:
    parts = key.split("/")
    index = next((i for i, p in enumerate(parts) if _is_size(p)), None)
    if index is None:
        return KeyParts(model=_strip_provider(parts, provider))
    size = _size(parts[index])
    rest = parts[index + 1 :]
    steps: int | str | None = None
    if rest and (_STEPS.match(rest[0]) or rest[0] == "max-steps"):
        match = _STEPS.match(rest[0])
        steps = int(match.group(1)) if match else MAX
        rest = rest[1:]
    before = parts[:index]
    quality = None
    if before and before[-1].lower() in QUALITIES:
        quality = before.pop().lower()
    model = "/".join(before + rest)
    return KeyParts(model=_strip_provider(model.split("/"), provider), size=size,
                    quality=quality, steps=steps)  # fmt: skip


def _is_size(part: str) -> bool:
    return part == "max-x-max" or _SIZE.match(part) is not None


def _size(part: str) -> str:
    match = _SIZE.match(part)
    return f"{int(match.group(1))}x{int(match.group(2))}" if match else "*"


def _strip_provider(parts: list[str], provider: str | None) -> str:
    if provider and len(parts) > 1 and parts[0] == provider:
        parts = parts[1:]
    return "/".join(parts)
