"""Durations as OpenAI writes them in x-ratelimit-reset-* headers ("20ms", "1s", "6m0s",
"1h2m3.5s"): Go's time.Duration format, to millisecond precision."""

from __future__ import annotations

import math


def format_reset(seconds: float) -> str:
    if seconds <= 0:
        return "0s"
    total_ms = math.ceil(seconds * 1000)
    if total_ms < 1000:
        return f"{total_ms}ms"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    secs = f"{whole}.{millis:03d}".rstrip("0") if millis else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def retry_after_header(seconds: float) -> str:
    """Whole seconds for Retry-After, never 0 (a client would retry at once)."""
    return str(max(1, math.ceil(seconds)))
