"""The contract every provider adapter implements, and the errors they raise.

The canonical request and response shapes are OpenAI's (chat.completion,
chat.completion.chunk, embeddings, images). An adapter translates that shape to its
provider's wire format and back, and translates the provider's failures into
`ProviderError` from status codes and structured fields, never from message text.
Adapters do no routing, pricing or retries: they make one call to one deployment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import orjson

from faregate.errors import FaregateError
from faregate.usage import Usage


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to reach one upstream: the resolved provider settings."""

    name: str
    wire: str
    base_url: str
    api_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 600.0
    connect_timeout: float = 10.0
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        for k, v in self.options:
            if k == key:
                return v
        return default


@dataclass(slots=True)
class ChatResult:
    body: dict[str, Any]
    usage: Usage


@dataclass(slots=True)
class EmbeddingsResult:
    body: dict[str, Any]
    usage: Usage


@dataclass(slots=True)
class ImagesResult:
    body: dict[str, Any]
    usage: Usage


@dataclass(slots=True)
class ModerationsResult:
    body: dict[str, Any]
    usage: Usage


@dataclass(slots=True)
class TranscriptionResult:
    """`body` is the JSON object (json, verbose_json) or the text (text, srt, vtt)."""

    body: dict[str, Any] | str
    usage: Usage


@dataclass(slots=True)
class StreamState:
    """Filled in by a chat stream as it runs; read once the stream is exhausted, or when
    it is cut short (`reported`, `relayed_chars`)."""

    usage: Usage | None = None
    finish_reason: str | None = None
    # The usage the provider has reported so far, while the stream runs (Anthropic's
    # message_start and message_delta, Gemini's usageMetadata on each chunk); None until
    # it reports any. `usage` is the final report.
    reported: Usage | None = None
    # Characters of text (content, refusal, reasoning, tool-call names and arguments) the
    # gateway has relayed to its client: what a stream cut before the provider's report is
    # billed on.
    relayed_chars: int = 0
    # True while the chunk just yielded is followed by another, or by the stream's end,
    # with no wait in between (the same upstream read, or the whole body has arrived): the
    # API may then batch them into one write to the client.
    more: bool = False
    # Set by the gateway when its caller takes `Relayed` runs (OpenAI's own SSE, usage
    # asked for): a provider that can may then yield them instead of chunk dicts.
    relay: bool = False
    # Runs relayed to the client, whose characters are counted only if the stream is cut
    # short (`relayed_text_chars`).
    relayed_runs: list[Relayed] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def relayed_text_chars(self) -> int:
        """Characters of text relayed to the client so far, the relayed runs' included."""
        return self.relayed_chars + sum(run.text_chars() for run in self.relayed_runs)


class Relayed:
    """A run of chat.completion.chunk events from one upstream read, relayed as received.

    The events' JSON carries nothing the gateway reads (no usage, no finish reason, no
    error): OpenAI's content deltas, already in the client's format. `data` is their SSE
    text as the upstream sent it (each `data: {...}` line with its blank line); each
    event's JSON is parsed only when something needs the chunks themselves (the response
    cache, the text of a stream cut short)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def count(self) -> int:
        return self.data.count(b"\n\n")

    def events(self) -> list[bytes]:
        """Each event's `data: {...}` line."""
        return [event for event in self.data.split(b"\n\n") if event]

    def chunks(self) -> list[dict[str, Any]]:
        return [orjson.loads(event[6:]) for event in self.events()]

    def text_chars(self) -> int:
        return sum(delta_chars(chunk) for chunk in self.chunks())


def delta_chars(chunk: dict[str, Any]) -> int:
    """Characters of text in a chat.completion.chunk's deltas. Called for every chunk a
    stream relays: a delta holding only `content` (nearly all of them) takes the short way."""
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        text = delta.get("content")
        if isinstance(text, str):
            total += len(text)
        if len(delta) > 1 or text is None:
            total += _other_delta_chars(delta)
    return total


def _other_delta_chars(delta: dict[str, Any]) -> int:
    """A delta's refusal, reasoning (`reasoning_content`: Claude's thinking, Gemini's
    thoughts, DeepSeek's reasoning) and tool-call text (its `content` is counted by
    delta_chars)."""
    refusal = delta.get("refusal")
    total = len(refusal) if isinstance(refusal, str) else 0
    reasoning = delta.get("reasoning_content")
    if isinstance(reasoning, str):
        total += len(reasoning)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                text = function.get(key)
                if isinstance(text, str):
                    total += len(text)
    return total


class ProviderError(FaregateError):
    """A failure of one upstream call.

    `retryable` says whether another deployment (or a later try) may succeed;
    `retry_after` carries the provider's Retry-After in seconds when it sent one.
    """

    status = 502
    type = "api_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        code: str = "upstream_error",
        type: str = "api_error",
        param: str | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        headers = {"Retry-After": str(int(retry_after + 0.999))} if retry_after else None
        super().__init__(message, status=status, code=code, type=type, param=param, headers=headers)
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status


class Provider(Protocol):
    """One wire format. Instances are built once per endpoint and hold a pooled session."""

    wire: ClassVar[str]
    # Which calls this wire format supports: a subset of
    # {"chat", "chat_stream", "tools", "vision", "embeddings", "images", "moderations",
    # "transcriptions"}; "moderations" means the adapter also has
    # `async def moderations(self, body, model) -> ModerationsResult`, "transcriptions"
    # `async def transcriptions(self, body, model) -> TranscriptionResult` (body["file"] is
    # a faregate.audio.AudioUpload).
    capabilities: ClassVar[frozenset[str]]

    async def chat(self, body: dict[str, Any], model: str) -> ChatResult: ...

    def chat_stream(
        self, body: dict[str, Any], model: str, state: StreamState
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield OpenAI chat.completion.chunk dicts; fill `state.usage` before finishing."""
        ...

    async def embeddings(self, body: dict[str, Any], model: str) -> EmbeddingsResult: ...

    async def images(self, body: dict[str, Any], model: str) -> ImagesResult: ...

    async def aclose(self) -> None: ...
