"""An uploaded audio file, held in memory, and what its bytes say of its length: exact from a
WAV header, else an upper bound from the byte count at a conservative low bitrate. It decodes
nothing and never touches the disk.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from decimal import Decimal

# OpenAI's upload limit for /v1/audio/transcriptions.
MAX_AUDIO_BYTES = 25 * 1024 * 1024
# The bound for compressed audio assumes 6 kbit/s (750 bytes a second), the lowest bitrate of
# the codecs OpenAI accepts as used for speech (Opus goes down to 6 kbit/s; MP3, AAC and
# Vorbis stay above 8). A file encoded lower could last longer than its bound.
MIN_BYTES_PER_SECOND = 750
_UNKNOWN_SIZE = 0xFFFFFFFF  # a streamed WAV's data size, never filled in


@dataclass(frozen=True, slots=True)
class AudioUpload:
    """The `file` part of a transcription request: its bytes, name and content type."""

    data: bytes
    filename: str = "audio"
    content_type: str = "application/octet-stream"

    @property
    def wav_seconds(self) -> Decimal | None:
        """The exact duration a WAV header declares; None for anything else."""
        return wav_duration(self.data)

    @property
    def seconds_bound(self) -> int:
        """The most seconds this file can hold, in whole seconds: the WAV duration rounded up,
        else the byte count at MIN_BYTES_PER_SECOND."""
        exact = self.wav_seconds
        if exact is not None:
            return whole_seconds(exact)
        return math.ceil(len(self.data) / MIN_BYTES_PER_SECOND)


def whole_seconds(seconds: Decimal) -> int:
    """Seconds rounded up to a whole second, as OpenAI reports a transcription's duration."""
    return max(0, math.ceil(seconds))


def wav_duration(data: bytes) -> Decimal | None:
    """data bytes / byte rate of a RIFF/WAVE file, from its `fmt ` and `data` chunks. A data
    size larger than the bytes present (or the streamed 0xFFFFFFFF) counts the bytes present."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    byte_rate: int | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and size >= 16 and body + 16 <= len(data):
            (byte_rate,) = struct.unpack_from("<I", data, body + 8)
        elif chunk_id == b"data":
            if not byte_rate:
                return None  # no (or a zero) byte rate before the samples: not a WAV we can read
            present = len(data) - body
            samples = present if size in (0, _UNKNOWN_SIZE) else min(size, present)
            return Decimal(samples) / Decimal(byte_rate)
        offset = body + size + (size & 1)  # chunks are padded to an even size
    return None
