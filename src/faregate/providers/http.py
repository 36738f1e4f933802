"""HTTP plumbing shared by every adapter: JSON posts, SSE decoding, timeouts, and the one
place where aiohttp/asyncio failures and upstream HTTP statuses become `ProviderError`.
It knows no wire format: adapters hand it a parser for error bodies and stream events.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson

from faregate.config import ConfigError
from faregate.providers.base import Endpoint, ProviderError, Relayed, StreamState
from faregate.providers.http1 import PayloadError, ProtocolError, Timeouts, header_block
from faregate.providers.transport import HttpTransport

T = TypeVar("T")

USER_AGENT = "faregate"
MAX_MESSAGE_CHARS = 1000
MAX_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """What an upstream error body says, from its structured fields only.

    `status` overrides the HTTP status when a structured field says more (a Google
    API_KEY_INVALID arrives as 400; an Anthropic stream `error` event has no status).
    """

    message: str | None = None
    code: str | None = None
    param: str | None = None
    status: int | None = None


ErrorParser = Callable[[Any], ErrorDetail]


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class EventParser(Protocol):
    """Turns one wire format's SSE events into OpenAI chat.completion.chunk dicts."""

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]: ...

    def close(self) -> list[dict[str, Any]]:
        """Called at the end of the body: final chunks, or raise if the stream was cut."""
        ...


class RelayingParser(EventParser, Protocol):
    """A parser of OpenAI's own chunks, which a client that asked for usage may be sent as
    the upstream wrote them (`StreamState.relay`): `relay` passes runs of events the gateway
    need not read, `read` reads any other for what it reports (and says whether it is a
    chunk, relayed as received all the same)."""

    def relay(self, run: bytes, start: int) -> int | None: ...

    def read(self, data: bytes) -> bool: ...


# -- timeouts ------------------------------------------------------------------------


def timeouts(endpoint: Endpoint, *, stream: bool = False) -> Timeouts:
    """Total and connect timeouts; a stream also bounds the wait between two reads by the
    endpoint option `read_timeout` (default: the total timeout)."""
    read = float(endpoint.option("read_timeout", endpoint.timeout)) if stream else None
    return Timeouts(total=endpoint.timeout, connect=endpoint.connect_timeout, read=read)


def client_timeout(endpoint: Endpoint) -> aiohttp.ClientTimeout:
    """The same limits for aiohttp (multipart uploads)."""
    return aiohttp.ClientTimeout(
        total=endpoint.timeout,
        connect=endpoint.connect_timeout,
        sock_connect=endpoint.connect_timeout,
    )


# -- errors ----------------------------------------------------------------------------


def bad_response(message: str) -> ProviderError:
    return ProviderError(message, status=502, code="upstream_bad_response", retryable=True)


def stream_cut() -> ProviderError:
    return ProviderError(
        "The upstream provider closed the stream before it finished.",
        status=502,
        code="upstream_disconnected",
        retryable=True,
    )


@contextmanager
def map_exceptions() -> Iterator[None]:
    """Translate transport and decoding failures into `ProviderError`. The only place that
    knows the HTTP clients' exceptions; `ProviderError` passes through untouched."""
    try:
        yield
    except TimeoutError:
        raise ProviderError(
            "The upstream provider did not answer in time.",
            status=504,
            code="upstream_timeout",
            retryable=True,
        ) from None
    except (aiohttp.ClientPayloadError, PayloadError):
        raise stream_cut() from None
    except (aiohttp.ClientConnectionError, OSError):
        raise ProviderError(
            "The upstream provider could not be reached.",
            status=502,
            code="upstream_unreachable",
            retryable=True,
        ) from None
    except (aiohttp.ClientError, ProtocolError):
        raise bad_response("The upstream provider sent an invalid HTTP response.") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        # orjson.JSONDecodeError is a ValueError; the others come from a body whose
        # shape does not match the wire format.
        raise bad_response("The upstream provider sent a malformed response body.") from None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP-date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _scrub(message: str | None, endpoint: Endpoint) -> str | None:
    if not message:
        return None
    if endpoint.api_key and endpoint.api_key in message:
        message = message.replace(endpoint.api_key, "***")
    return message[:MAX_MESSAGE_CHARS]


@dataclass(frozen=True, slots=True)
class _Rule:
    status: int
    code: str
    retryable: bool
    summary: str
    type: str = "api_error"
    quote: bool = True  # append the upstream's own message


_AUTH = _Rule(
    502,
    "upstream_auth_error",
    False,
    "The upstream provider rejected the gateway's credentials",
    quote=False,
)
_RULES = {
    401: _AUTH,
    402: _Rule(502, "upstream_error", True, "The upstream provider refused to bill its account"),
    403: _AUTH,
    404: _Rule(502, "upstream_not_found", False, "The upstream provider does not know this model"),
    408: _Rule(504, "upstream_timeout", True, "The upstream provider timed out", quote=False),
    409: _Rule(502, "upstream_error", True, "The upstream provider reported a conflict"),
    413: _Rule(
        413,
        "request_too_large",
        False,
        "The request is too large for the upstream provider",
        type="invalid_request_error",
    ),
    429: _Rule(
        429,
        "rate_limit_exceeded",
        True,
        "The upstream provider is rate limiting requests",
        type="rate_limit_error",
    ),
    529: _Rule(503, "upstream_overloaded", True, "The upstream provider is overloaded"),
}
_SERVER = _Rule(502, "upstream_error", True, "The upstream provider failed")


def error_for_status(
    status: int, detail: ErrorDetail, endpoint: Endpoint, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The one table from an upstream status (and its structured body) to `ProviderError`.
    Any 4xx not in the table means the request itself was wrong: a 400, never retried."""
    effective = detail.status or status
    text = _scrub(detail.message, endpoint)
    rule = _RULES.get(effective) or (_SERVER if effective >= 500 else None)
    if rule is None:
        return ProviderError(
            text or "The upstream provider rejected the request.",
            status=400,
            code=detail.code or "invalid_request",
            type="invalid_request_error",
            param=detail.param,
            retryable=False,
            upstream_status=status,
        )
    message = f"{rule.summary} (HTTP {effective})"
    message += f": {text}" if text and rule.quote else "."
    return ProviderError(
        message,
        status=rule.status,
        code=rule.code,
        type=rule.type,
        retryable=rule.retryable,
        retry_after=parse_retry_after(headers or {}) if rule.retryable else None,
        upstream_status=status,
    )


# -- server-sent events --------------------------------------------------------------


class SSEDecoder:
    """Incremental text/event-stream decoder: bytes in, complete events out."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, block: bytes) -> list[SSEEvent]:
        return self._feed(block, raw=False)  # type: ignore[return-value]

    def feed_raw(self, block: bytes) -> list[bytes | SSEEvent]:
        """As `feed`, but consecutive one-line `data: ` events come back as bytes, as
        received (each `data: {...}` line with its blank line), for a stream that may relay
        them; any other event is decoded."""
        return self._feed(block, raw=True)

    def _feed(self, block: bytes, *, raw: bool) -> list[bytes | SSEEvent]:
        buffer = self._buffer + block if self._buffer else block
        # `.find` rather than `in`: CPython's bytes.__contains__ first tries its argument as
        # an integer and formats a TypeError it then drops, ~1,900 instructions a test.
        if self._data or self._event is not None or buffer.find(b"\r") >= 0:
            return [*self._lines(buffer)]
        # The common case, one `data:` line per event, without a pass per line: every part
        # before a blank line is a whole event, the rest starts the next one.
        end = buffer.rfind(b"\n\n") + 2
        if end < 2:
            self._buffer = buffer
            return []
        # Every whole event here one `data: ` line (its only newlines the blank line after
        # each, every one but the last followed by `data: `): all of them in one piece. What
        # is left once every `\n\ndata: ` is cut out holds no newline: a split, a join and a
        # `memchr`, ~28,000 instructions for a 20-chunk stream read at once, where counting
        # the newlines and the separators took ~48,000 (counting one byte is a loop over
        # every byte).
        if (
            raw
            and buffer.startswith(b"data: ")
            and b"".join(buffer[: end - 2].split(b"\n\ndata: ")).find(b"\n") < 0
        ):
            self._buffer = buffer[end:]
            return [buffer[:end]]
        parts = buffer.split(b"\n\n")
        self._buffer = parts.pop()
        out: list[bytes | SSEEvent] = []
        for part in parts:
            if part.startswith(b"data: ") and part.find(b"\n") < 0:
                out.append(part + b"\n\n" if raw else SSEEvent(None, part[6:].decode()))
            elif part:  # other fields, several lines, `data:` without its space: line by line
                out += self._complete([*part.split(b"\n"), b""])
        return out

    def _lines(self, buffer: bytes) -> list[SSEEvent]:
        *lines, self._buffer = buffer.split(b"\n")
        return self._complete(lines)

    def _complete(self, lines: list[bytes]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for raw in lines:
            event = self._line(raw.rstrip(b"\r").decode())
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[SSEEvent]:
        """Events pending at end of stream (a last event without its blank line)."""
        events = self._lines(self._buffer + b"\n") if self._buffer else []
        if self._data:
            events.append(self._dispatch())
        return events

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(self._event, "\n".join(self._data))
        self._event, self._data = None, []
        return event

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch() if self._data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None


# -- the client ------------------------------------------------------------------------


class Upstream:
    """One endpoint's HTTP calls over the app's pooled clients (never closed here): JSON
    and streams over the HttpTransport, multipart uploads over the aiohttp session."""

    def __init__(
        self,
        endpoint: Endpoint,
        session: aiohttp.ClientSession,
        headers: Mapping[str, str],
        parse_error: ErrorParser,
        transport: HttpTransport,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        self.transport = transport
        self.headers = {
            "Content-Type": "application/json",
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": USER_AGENT,
            **headers,
            **dict(endpoint.headers),
        }
        try:
            self._header_block = header_block(self.headers)
        except ValueError as exc:
            raise ConfigError(f"provider {endpoint.name!r}: {exc}") from None
        # A multipart body sets its own Content-Type (with the boundary).
        self.form_headers = {k: v for k, v in self.headers.items() if k != "Content-Type"}
        self.parse_error = parse_error
        self._timeouts = timeouts(endpoint)
        self._stream_timeouts = timeouts(endpoint, stream=True)
        self._form_timeout = client_timeout(endpoint)

    def _error_detail(self, raw: bytes) -> ErrorDetail:
        try:
            return self.parse_error(orjson.loads(raw))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            return ErrorDetail()

    def status_error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> ProviderError:
        return error_for_status(status, self._error_detail(raw), self.endpoint, headers)

    def detail_error(self, status: int, body: Any) -> ProviderError:
        """An error reported inside a 200 body or stream event, mapped like a status."""
        try:
            detail = self.parse_error(body)
        except (KeyError, TypeError, AttributeError, IndexError):
            detail = ErrorDetail()
        return error_for_status(status, detail, self.endpoint)

    async def post_json(self, url: str, body: dict[str, Any], parse: Callable[[Any], T]) -> T:
        """POST `body`; parse the JSON answer with `parse`, inside the error mapping."""
        with map_exceptions():
            response = await self.transport.post(
                url, orjson.dumps(body), self._header_block, self._timeouts
            )
            try:
                raw = await response.read()
            finally:
                response.release()
            if response.status >= 400:
                raise self.status_error(response.status, raw, response.headers)
            return parse(orjson.loads(raw))

    async def post_form(
        self, url: str, form: aiohttp.FormData, parse: Callable[[bytes, str], T]
    ) -> T:
        """POST a multipart `form` (built anew per call: aiohttp sends one only once); `parse`
        gets the raw answer and its content type, inside the error mapping."""
        with map_exceptions():
            async with self.session.post(
                url, data=form, headers=self.form_headers, timeout=self._form_timeout
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise self.status_error(response.status, raw, response.headers)
                return parse(raw, response.content_type)

    async def stream(
        self, url: str, body: dict[str, Any], parser: EventParser, state: StreamState
    ) -> AsyncIterator[dict[str, Any]]:
        """POST `body` and yield the chunks `parser` makes of the SSE answer."""
        with map_exceptions():
            response = await self.transport.post(
                url, orjson.dumps(body), self._header_block, self._stream_timeouts
            )
            try:
                if response.status >= 400:
                    raw = await response.read(MAX_ERROR_BODY_BYTES)
                    raise self.status_error(response.status, raw, response.headers)
                decoder = SSEDecoder()
                relaying = state.relay and hasattr(parser, "relay")
                async for block in response.iter_any():
                    if relaying:
                        chunks = _relay(parser, decoder.feed_raw(block))  # type: ignore[arg-type]
                    else:
                        chunks = _parse(parser, decoder.feed(block))
                    # Once the whole body is here, every chunk left follows without a
                    # wait: the stream's end too (the caller writes it all at once).
                    last = -1 if response.complete else len(chunks) - 1
                    for i, chunk in enumerate(chunks):
                        state.more = i != last
                        yield chunk
                state.more = True
                for chunk in _parse(parser, decoder.flush()):
                    yield chunk
                for chunk in parser.close():
                    yield chunk
            finally:
                response.release()


def _relay(parser: RelayingParser, events: list[bytes | SSEEvent]) -> list[Any]:
    """The events of one read as `Relayed` runs, in order: the runs `relay` lets through
    unread and the events `read` first that go on as received (the finish and usage
    events), joined where they follow one another, so that a read relayed whole is one run
    however many of its events were read: one item through the stream's generators, not
    one per reporting event. Only an event that is not one plain `data: ` line is decoded
    and parsed into a chunk dict; `[DONE]` ends a run (the gateway writes its own)."""
    out: list[Any] = []
    for item in events:
        if type(item) is SSEEvent:
            out += parser.feed(item)
            continue
        at, size = 0, len(item)
        begun = -1  # where the run that reaches `at` begins; -1: none does
        while at < size:
            end = parser.relay(item, at)
            if end is None:
                end = item.find(b"\n\n", at) + 2
                if not parser.read(item[at + 6 : end - 2]):
                    if begun >= 0:
                        out.append(Relayed(item[begun:at]))
                        begun = -1
                    at = end
                    continue
            if begun < 0:
                begun = at
            at = end
        if begun >= 0:
            out.append(Relayed(item[begun:] if begun else item))
    return out


def _parse(parser: EventParser, events: list[SSEEvent]) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    for event in events:
        chunks.extend(parser.feed(event))
    return chunks
