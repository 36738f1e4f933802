"""Deterministic embedding vectors: the same text and size always give the same unit vector.

Each component is +-1/sqrt(dimensions), its sign a bit of SHAKE-128 of the text: unit length
by construction, near-orthogonal for different texts, and built without a per-value Python
loop. Recent vectors are cached because benchmarks repeat their inputs.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from functools import lru_cache
from itertools import chain


@lru_cache(maxsize=16)
def _sign_table(dimensions: int) -> tuple[tuple[float, ...], ...]:
    """For each byte value, its eight bits as eight signed components."""
    size = 1.0 / math.sqrt(dimensions)
    return tuple(
        tuple(size if byte >> bit & 1 else -size for bit in range(8)) for byte in range(256)
    )


@lru_cache(maxsize=2048)
def embedding(text: str, dimensions: int) -> tuple[float, ...]:
    """A unit-length vector of `dimensions` floats derived from `text`."""
    digest = hashlib.shake_128(text.encode()).digest((dimensions + 7) // 8)
    values = tuple(chain.from_iterable(map(_sign_table(dimensions).__getitem__, digest)))
    return values[:dimensions]


def as_base64(vector: tuple[float, ...]) -> str:
    """Little-endian float32 bytes in base64, as `encoding_format: base64` returns them."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()
