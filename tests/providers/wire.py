"""Shared helpers for provider tests: endpoints and SSE text fed straight to a parser."""

from __future__ import annotations

from typing import Any

from faregate.providers.base import Endpoint
from faregate.providers.http import ErrorParser, EventParser, SSEDecoder, Upstream, _relay


def endpoint(wire: str, base_url: str = "http://upstream", **options: Any) -> Endpoint:
    return Endpoint(
        name=f"test-{wire}",
        wire=wire,
        base_url=base_url,
        api_key="sk-test-secret",
        timeout=float(options.pop("timeout", 5.0)),
        connect_timeout=1.0,
        options=tuple(options.items()),
    )


def offline(wire: str, parse_error: ErrorParser) -> Upstream:
    """An Upstream for parsers that only need its error mapping (no session is used)."""
    return Upstream(endpoint(wire), None, {}, parse_error, None)  # type: ignore[arg-type]


def run_sse(parser: EventParser, text: str) -> list[dict[str, Any]]:
    """Feed an SSE body through a parser the way Upstream.stream does."""
    decoder = SSEDecoder()
    chunks: list[dict[str, Any]] = []
    for event in decoder.feed(text.encode()) + decoder.flush():
        chunks.extend(parser.feed(event))
    chunks.extend(parser.close())
    return chunks


def run_relay(parser: Any, text: str) -> list[Any]:
    """Feed an SSE body through a parser the way Upstream.stream does for a caller that
    takes `Relayed` runs: chunk dicts and runs, in order."""
    decoder = SSEDecoder()
    items = _relay(parser, decoder.feed_raw(text.encode()))
    for event in decoder.flush():
        items.extend(parser.feed(event))
    items.extend(parser.close())
    return items
