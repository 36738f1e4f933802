"""The canonical usage record: one per upstream call, whatever the provider.

Token counts follow OpenAI's inclusive convention: `input_tokens` includes
`cached_input_tokens` (cache reads) and `cache_write_tokens`, and `output_tokens` includes
`reasoning_tokens`. Metering splits them into disjoint event types (input, cached_input,
output, reasoning); cache writes are input there, priced at the catalog's cache_write rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    # Input written to the provider's prompt cache (Anthropic's cache_creation_input_tokens):
    # reported back as such; input in usage events, priced at the catalog's cache_write rate.
    cache_write_tokens: int = 0
    # The part of cache_write_tokens written for an hour (Anthropic's `"ttl": "1h"`,
    # cache_creation.ephemeral_1h_input_tokens), priced at the catalog's cache_write_1h rate.
    cache_write_1h_tokens: int = 0
    images: int = 0
    image_width: int = 0
    image_height: int = 0
    image_quality: str | None = None
    image_steps: int | None = None
    seconds: Decimal = Decimal(0)
    # True when the provider reported nothing and the gateway counted.
    estimated: bool = False

    # Comparisons rather than max(): on Python 3.11 the builtin parses its keyword arguments
    # on every call (~750 instructions), and these are read several times per request.
    @property
    def uncached_input_tokens(self) -> int:
        uncached = self.input_tokens - self.cached_input_tokens
        return uncached if uncached > 0 else 0

    @property
    def visible_output_tokens(self) -> int:
        visible = self.output_tokens - self.reasoning_tokens
        return visible if visible > 0 else 0

    @property
    def image_size(self) -> str | None:
        if not self.images:
            return None
        return f"{self.image_width}x{self.image_height}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = str(self.seconds)
        return data
