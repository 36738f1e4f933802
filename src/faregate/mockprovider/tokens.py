"""The mock's deterministic token arithmetic, shared by every wire format.

Input: `count_tokens(text)` is ceil(ASCII characters / 4) plus one per other character (as
real tokenizers spend about a token per CJK character); a prompt costs that for each
message's text plus 4 per message, 85 per image, and `count_tokens(name + description +
schema)` per tool. Output: one generated word is one token. Pure functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

MESSAGE_OVERHEAD = 4
IMAGE_TOKENS = 85
CACHE_THRESHOLD = 1024
CACHED_TOKENS = 1024
# Any prompt containing this text is answered with a context-window error.
CONTEXT_MARKER = "context_length_exceeded"

_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
    "in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est"
)
WORDS = tuple(_LOREM.split())


def count_tokens(text: str) -> int:
    """Tokens in `text`: one per four ASCII characters, rounded up, and one per other
    character."""
    if text.isascii():
        return (len(text) + 3) // 4
    wide = sum(1 for c in text if ord(c) > 127)
    return (len(text) - wide + 3) // 4 + wide


def is_reasoning_model(model: str) -> bool:
    """Reasoning models spend half of their output tokens thinking."""
    return "reasoning" in model or model.startswith(("o1", "o3"))


def cached_tokens(prompt_tokens: int) -> int:
    """Prompts longer than the cache threshold report a cached prefix of fixed size."""
    return CACHED_TOKENS if prompt_tokens > CACHE_THRESHOLD else 0


@lru_cache(maxsize=4096)
def word_pieces(count: int, offset: int = 0) -> tuple[str, ...]:
    """`count` tokens of reply text; `offset` varies the text between choices."""
    words = WORDS
    size = len(words)
    pieces = [" " + words[(i + offset) % size] for i in range(count)]
    if pieces:
        pieces[0] = pieces[0][1:].capitalize()
    return tuple(pieces)


class PromptTally:
    """Accumulates a prompt's token count while a wire format walks its request."""

    __slots__ = ("last_text", "overflow", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.overflow = False
        self.last_text = ""

    def message(self, text: str) -> None:
        self.tokens += count_tokens(text) + MESSAGE_OVERHEAD
        self.last_text = text
        if CONTEXT_MARKER in text:
            self.overflow = True

    def image(self) -> None:
        self.tokens += IMAGE_TOKENS

    def tool(self, name: str, description: str, schema: Mapping[str, Any] | None) -> None:
        encoded = orjson.dumps(schema or {}, option=orjson.OPT_SORT_KEYS).decode()
        self.tokens += count_tokens(name + description + encoded)
