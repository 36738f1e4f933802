"""A minimal PNG encoder for solid-colour RGB images, so mock images are real, valid files of
exactly the requested size. Encoded files are cached by (width, height, colour).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from functools import lru_cache

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 4096
_ROWS_PER_BLOCK = 256

Colour = tuple[int, int, int]


def colour_for(text: str) -> Colour:
    """A colour derived from the prompt, so different prompts give visibly different images."""
    digest = hashlib.sha256(text.encode()).digest()
    return digest[0], digest[1], digest[2]


@lru_cache(maxsize=64)
def solid_png(width: int, height: int, colour: Colour) -> bytes:
    """An 8-bit RGB PNG of one colour; rows are compressed in blocks to bound memory."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise ValueError(f"image sides must be between 1 and {MAX_SIDE}")
    row = b"\x00" + bytes(colour) * width  # filter type 0 (None), then the pixels
    compressor = zlib.compressobj(6)
    parts = []
    remaining = height
    while remaining:
        rows = min(remaining, _ROWS_PER_BLOCK)
        parts.append(compressor.compress(row * rows))
        remaining -= rows
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join(
        (SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", b"".join(parts)), _chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
