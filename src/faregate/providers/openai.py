"""The OpenAI wire format, for any OpenAI-compatible base URL that includes `/v1` (OpenAI,
Mistral, DeepSeek, Together, Fireworks, vLLM, Ollama). Bodies pass through with only the
model replaced; usage is read from the answer, or estimated when a host reports none.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import orjson

from faregate import tokens
from faregate.providers.base import (
    ChatResult,
    EmbeddingsResult,
    Endpoint,
    ImagesResult,
    ModerationsResult,
    StreamState,
    TranscriptionResult,
)
from faregate.providers.http import (
    ErrorDetail,
    SSEEvent,
    Upstream,
    bad_response,
    stream_cut,
)
from faregate.providers.openai_audio import transcription_form, transcription_result
from faregate.providers.openai_request import from_messages_api
from faregate.providers.shape import FROM_MESSAGES_API, chunk, openai_usage, unsigned_messages
from faregate.providers.transport import HttpTransport
from faregate.usage import Usage

DEFAULT_IMAGE_SIZE = (1024, 1024)
DEFAULT_IMAGE_QUALITY = "standard"


class OpenAIProvider:
    """Chat, embeddings, images, moderations and audio transcriptions against one
    OpenAI-compatible base URL."""

    wire: ClassVar[str] = "openai"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            "chat",
            "chat_stream",
            "tools",
            "vision",
            "embeddings",
            "images",
            "moderations",
            "transcriptions",
        }
    )

    def __init__(
        self, endpoint: Endpoint, session: aiohttp.ClientSession, transport: HttpTransport
    ) -> None:
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        self.http = Upstream(endpoint, session, headers, parse_error, transport)
        self.base_url = endpoint.base_url.rstrip("/")
        # Some OpenAI-compatible hosts reject `stream_options`; they can turn it off.
        self.stream_usage = bool(endpoint.option("stream_usage", True))

    async def chat(self, body: dict[str, Any], model: str) -> ChatResult:
        payload = chat_payload(body, model, stream=False)
        return await self.http.post_json(
            f"{self.base_url}/chat/completions", payload, lambda data: chat_result(data, body)
        )

    def chat_stream(
        self, body: dict[str, Any], model: str, state: StreamState
    ) -> AsyncIterator[dict[str, Any]]:
        payload = chat_payload(body, model, stream=True, include_usage=self.stream_usage)
        parser = StreamParser(body, state, self.http)
        return self.http.stream(f"{self.base_url}/chat/completions", payload, parser, state)

    async def embeddings(self, body: dict[str, Any], model: str) -> EmbeddingsResult:
        return await self.http.post_json(
            f"{self.base_url}/embeddings",
            {**body, "model": model},
            lambda data: embeddings_result(data, body),
        )

    async def images(self, body: dict[str, Any], model: str) -> ImagesResult:
        return await self.http.post_json(
            f"{self.base_url}/images/generations",
            {**body, "model": model},
            lambda data: images_result(data, body),
        )

    async def moderations(self, body: dict[str, Any], model: str) -> ModerationsResult:
        return await self.http.post_json(
            f"{self.base_url}/moderations",
            {**body, "model": model},
            lambda data: moderations_result(data, body),
        )

    async def transcriptions(self, body: dict[str, Any], model: str) -> TranscriptionResult:
        return await self.http.post_form(
            f"{self.base_url}/audio/transcriptions",
            transcription_form(body, model),
            lambda raw, _content_type: transcription_result(raw, body),
        )

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the app."""


# -- request mapping ---------------------------------------------------------------------


def chat_payload(
    body: dict[str, Any], model: str, *, stream: bool, include_usage: bool = True
) -> dict[str, Any]:
    """The client's body, unknown fields included, with the provider's model id; a body from
    the Messages API without the Anthropic fields OpenAI would refuse."""
    payload = {**body, "model": model}
    if FROM_MESSAGES_API in payload:
        payload = from_messages_api(payload)
    messages = payload.get("messages")
    if isinstance(messages, list):
        payload["messages"] = unsigned_messages(messages)
    if not stream:
        payload.pop("stream", None)
        payload.pop("stream_options", None)
        return payload
    payload["stream"] = True
    if include_usage:
        payload["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return payload


# -- response and usage mapping ----------------------------------------------------------


def _int(value: Any) -> int:
    return int(value) if value else 0


def usage_from_openai(raw: Any) -> Usage | None:
    """OpenAI's inclusive usage; None when the host reported none."""
    if not isinstance(raw, dict) or (
        raw.get("prompt_tokens") is None and raw.get("completion_tokens") is None
    ):
        return None
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=_int(raw.get("prompt_tokens")),
        output_tokens=_int(raw.get("completion_tokens")),
        # DeepSeek reports its cache hits in `prompt_cache_hit_tokens`.
        cached_input_tokens=_int(prompt.get("cached_tokens") or raw.get("prompt_cache_hit_tokens")),
        reasoning_tokens=_int(completion.get("reasoning_tokens")),
    )


def estimate_chat_usage(body: dict[str, Any], output_text: str) -> Usage:
    return Usage(
        input_tokens=tokens.count_chat_input_tokens(body),
        output_tokens=tokens.count_text_tokens(output_text),
        estimated=True,
    )


def _message_text(message: dict[str, Any]) -> str:
    parts = [str(message.get("content") or ""), str(message.get("reasoning_content") or "")]
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(str(function.get("name") or ""))
        parts.append(str(function.get("arguments") or ""))
    return "".join(parts)


def chat_result(data: Any, body: dict[str, Any]) -> ChatResult:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise bad_response("The upstream provider sent a chat response without choices.")
    usage = usage_from_openai(data.get("usage"))
    if usage is None:
        text = "".join(_message_text(c.get("message") or {}) for c in data["choices"])
        usage = estimate_chat_usage(body, text)
        data["usage"] = openai_usage(usage)
    return ChatResult(body=data, usage=usage)


def embeddings_result(data: Any, body: dict[str, Any]) -> EmbeddingsResult:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise bad_response("The upstream provider sent an embeddings response without data.")
    raw = data.get("usage")
    if isinstance(raw, dict) and raw.get("prompt_tokens") is not None:
        usage = Usage(input_tokens=_int(raw["prompt_tokens"]))
    else:
        count = tokens.count_embedding_input_tokens(body.get("input"))
        usage = Usage(input_tokens=count, estimated=True)
        data["usage"] = {"prompt_tokens": count, "total_tokens": count}
    return EmbeddingsResult(body=data, usage=usage)


def parse_size(size: Any) -> tuple[int, int]:
    """(width, height) of an images `size` like "1024x1792"; the default for "auto"."""
    if isinstance(size, str):
        width, sep, height = size.lower().partition("x")
        if sep and width.isascii() and width.isdigit() and height.isascii() and height.isdigit():
            return int(width), int(height)
    return DEFAULT_IMAGE_SIZE


def images_result(data: Any, body: dict[str, Any]) -> ImagesResult:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise bad_response("The upstream provider sent an images response without data.")
    width, height = parse_size(body.get("size"))
    steps = body.get("steps")
    usage = Usage(
        images=len(data["data"]),
        image_width=width,
        image_height=height,
        image_quality=str(body.get("quality") or DEFAULT_IMAGE_QUALITY),
        image_steps=int(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None,
    )
    raw = data.get("usage")
    if isinstance(raw, dict):  # token-priced image models report their tokens
        usage.input_tokens = _int(raw.get("input_tokens"))
        usage.output_tokens = _int(raw.get("output_tokens"))
    return ImagesResult(body=data, usage=usage)


def moderations_result(data: Any, body: dict[str, Any]) -> ModerationsResult:
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise bad_response("The upstream provider sent a moderations response without results.")
    count = tokens.count_embedding_input_tokens(body.get("input"))
    return ModerationsResult(body=data, usage=Usage(input_tokens=count, estimated=True))


# -- error mapping ---------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_error(body: Any) -> ErrorDetail:
    """`{"error": {"message", "type", "param", "code"}}`; also `{"error": "..."}` (Ollama)
    and a top-level `{"message", "code": 400}` (vLLM)."""
    if not isinstance(body, dict):
        return ErrorDetail()
    error = body.get("error")
    if isinstance(error, str):
        return ErrorDetail(message=error)
    if not isinstance(error, dict):
        return ErrorDetail(message=_str(body.get("message")))
    return ErrorDetail(
        message=_str(error.get("message")),
        code=_str(error.get("code")),
        param=_str(error.get("param")),
    )


# -- stream parsing --------------------------------------------------------------------


# What, in a run of events from a host that writes compact JSON, marks an event the gateway
# must read (`StreamParser.relay`): an error, looked for from the start (the first ends the
# stream); a usage, a finish and the stream's end, looked for from the end of the read (of
# each, the last one read tells all: a later usage or finish replaces an earlier one).
_ERROR_MARKER = b'"error":'
_LAST_MARKERS = (b'"finish_reason":"', b'"usage":{', b"data: [DONE]")


def _passes(run: bytes, start: int, end: int) -> bool:
    """Whether every event in run[start:end] may go to the client unparsed: each has
    choices, every `usage` and `finish_reason` is null, and no `error` appears. Inside a
    JSON string a quote is escaped, so no text can pass for these keys."""
    return (
        run.count(b'"choices":[{', start, end) == run.count(b"\n\n", start, end)
        and run.count(b'"usage"', start, end) == run.count(b'"usage":null', start, end)
        and run.count(b'"finish_reason"', start, end)
        == run.count(b'"finish_reason":null', start, end)
        and run.find(b'"error"', start, end) < 0
    )


class StreamParser:
    """Passes chunks through; records usage and finish reason. When the host sent no usage,
    it appends one usage-only chunk (`choices: []`) with an estimate, as OpenAI would."""

    def __init__(self, body: dict[str, Any], state: StreamState, http: Upstream) -> None:
        self.body = body
        self.state = state
        self.http = http
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False
        # For an estimate, if no usage comes: each chunk's deltas, or relayed events as
        # received (SSE text), parsed only then.
        self.deltas: list[dict[str, Any] | bytes] = []
        self.last: dict[str, Any] | bytes = {}
        self._compact = False  # see `relay`

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if event.data == "[DONE]":
            self.done = True
            return []
        return [self._read(orjson.loads(event.data))]

    def read(self, data: bytes) -> bool:
        """Read an event `relay` left (its JSON, after `data: `) for what it reports; True if
        it goes to the client as received all the same (a chunk, unchanged: the client asked
        for usage), False for the stream's `[DONE]`."""
        if data == b"[DONE]":
            self.done = True
            return False
        self._read(orjson.loads(data))
        return True

    def _read(self, data: Any) -> dict[str, Any]:
        if "error" in data and not data.get("choices"):
            raise self.http.detail_error(500, data)
        raw = data.get("usage")
        if raw is not None:  # at the end; on every chunk from hosts that stream usage
            usage = usage_from_openai(raw)
            if usage is not None:
                self.usage = self.state.reported = usage
        for choice in data.get("choices") or ():
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if self.usage is None:
                self.deltas.append(choice.get("delta") or {})
        self.last = data
        return data  # type: ignore[no-any-return]

    def relay(self, run: bytes, start: int) -> int | None:
        """Where the longest run of whole events from `start` in `run` (one-line `data: `
        events, each with its blank line) that may go to the client as received, unparsed,
        ends; None if the event at `start` must be read first (`read`).

        Until an event shows that the host writes compact JSON (`"finish_reason":null`, as
        OpenAI does), events are taken one at a time and each is proved by counting keys
        (`_passes`). From the event that shows it on (that one included), the host is taken
        to write every key that way (one JSON encoder writes a stream), and a read is not
        checked event by event: the run stops before the first event holding an error, or
        before the last event of the read that reports a usage, a finish or the stream's end
        (`_LAST_MARKERS`), whichever comes first. An earlier usage or finish in the run goes
        through unread: what it reports, the last one replaces (a host streaming usage on
        every chunk counts up; a finish reason is the last one given), as reading them all
        in order would have left it. The marks of a usage, a finish and the end are searched
        from the end of the read, where a stream read whole has them, so only the search for
        an error crosses the whole read: one scan of it, where searching each mark from the
        start took four (~12 µs of a 20-chunk stream read at once). Counting one event's keys
        takes seven scans, ~17,000 instructions."""
        if not self._compact:
            end = run.find(b"\n\n", start) + 2
            self._compact = run.find(b'"finish_reason":null', start, end) >= 0
            if not self._compact and not _passes(run, start, end):
                return None
        if self._compact:
            size = len(run)
            end = size
            for marker in _LAST_MARKERS:
                found = run.rfind(marker, start, size)
                if 0 <= found < end:
                    end = found
            found = run.find(_ERROR_MARKER, start, end)
            if found >= 0:
                end = found
            if end < size:  # the run ends where the event holding the mark begins
                before = run.rfind(b"\n\n", start, end)
                end = before + 2 if before >= 0 else start
            if end <= start:
                return None
        data = run[start:end] if start or end < len(run) else run
        if self.usage is None:
            self.deltas.append(data)
        self.last = data
        return end

    def _estimate_text(self) -> str:
        parts = []
        for delta in self.deltas:
            if isinstance(delta, bytes):  # relayed events, as received
                for event in delta.split(b"\n\n"):
                    for choice in (orjson.loads(event[6:]).get("choices") or ()) if event else ():
                        parts.append(_message_text(choice.get("delta") or {}))
            else:
                parts.append(_message_text(delta))
        return "".join(parts)

    def close(self) -> list[dict[str, Any]]:
        if not self.done and self.finish_reason is None:
            raise stream_cut()
        extra: list[dict[str, Any]] = []
        if self.usage is None:
            self.usage = estimate_chat_usage(self.body, self._estimate_text())
            last = self.last
            if isinstance(last, bytes):  # relayed events: the last of them
                last = orjson.loads(last.rstrip(b"\n").rsplit(b"\n\n", 1)[-1][6:])
            extra.append(
                chunk(
                    str(last.get("id") or "chatcmpl-estimated"),
                    str(last.get("model") or ""),
                    int(last.get("created") or time.time()),
                    [],
                    self.usage,
                )
            )
        self.state.usage = self.usage
        self.state.finish_reason = self.finish_reason
        return extra
