"""Splitting LiteLLM price-map keys: size, quality and step bracket live in the key."""

from __future__ import annotations

import pytest

from faregate.pricing.litellm_keys import KeyParts, split_key


@pytest.mark.parametrize(
    ("key", "provider", "expected"),
    [
        ("gpt-4o", "openai", KeyParts("gpt-4o")),
        ("azure/gpt-4o", "azure", KeyParts("gpt-4o")),
        ("vertex_ai/imagen-3", "vertex_ai-image-models", KeyParts("vertex_ai/imagen-3")),
        ("hd/1024-x-1792/dall-e-3", "openai", KeyParts("dall-e-3", "1024x1792", "hd")),
        ("256-x-256/dall-e-2", "openai", KeyParts("dall-e-2", "256x256")),
        (
            "azure/high/1024-x-1024/gpt-image-1",
            "azure",
            KeyParts("gpt-image-1", "1024x1024", "high"),
        ),
        ("azure/1024-x-1024/dall-e-2", "azure", KeyParts("dall-e-2", "1024x1024")),
        ("1024-x-1024/50-steps/sdxl-v1", "bedrock", KeyParts("sdxl-v1", "1024x1024", None, 50)),
        ("max-x-max/max-steps/sdxl-v0", "bedrock", KeyParts("sdxl-v0", "*", None, "max")),
    ],
)
def test_split_key(key: str, provider: str, expected: KeyParts) -> None:
    assert split_key(key, provider) == expected
