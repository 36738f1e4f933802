"""Audio lengths from bytes: a WAV header's exact duration, and the bound of anything else."""

from __future__ import annotations

import io
import struct
import wave
from decimal import Decimal

from faregate.audio import MIN_BYTES_PER_SECOND, AudioUpload, wav_duration


def _wav(frames: int, rate: int = 16000, channels: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * channels * frames)
    return out.getvalue()


def test_a_wav_header_gives_the_exact_duration_and_the_bound_rounds_it_up() -> None:
    data = _wav(frames=24_000)  # 1.5 s at 16 kHz, stereo
    assert wav_duration(data) == Decimal("1.5")
    assert AudioUpload(data).seconds_bound == 2


def test_a_streamed_wav_without_a_data_size_counts_the_bytes_present() -> None:
    data = bytearray(_wav(frames=8_000, rate=8000, channels=1))  # 1 s
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFFF)
    assert wav_duration(bytes(data)) == 1


def test_chunks_before_fmt_and_data_are_skipped_with_their_padding() -> None:
    data = _wav(frames=8_000, rate=8000, channels=1)
    odd = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd size is padded to even
    patched = data[:12] + odd + data[12:]
    assert wav_duration(patched) == 1


def test_anything_else_is_bounded_by_its_size_at_the_lowest_bitrate() -> None:
    mp3 = b"ID3" + b"\xff" * 74_997
    assert wav_duration(mp3) is None
    assert AudioUpload(mp3).seconds_bound == 75_000 // MIN_BYTES_PER_SECOND == 100
    assert AudioUpload(b"x").seconds_bound == 1
    no_rate = b"RIFF" + struct.pack("<I", 40) + b"WAVE" + b"data" + struct.pack("<I", 4) + b"abcd"
    assert wav_duration(no_rate) is None
