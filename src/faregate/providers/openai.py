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


_CONTENT = b'"content":"'


def _text_template(event: bytes) -> tuple[bytes, bytes] | None:
    """The event cut around its first `"content":"..."` text: what comes before the text,
    and what comes after it (from its closing quote); None if it has no such text."""
    start = event.find(_CONTENT)
    if start < 0:
        return None
    start += len(_CONTENT)
    end = event.find(b'"', start)
    while end > 0 and (end - len(event[:end].rstrip(b"\\"))) % 2:  # an escaped quote
        end = event.find(b'"', end + 1)
    return (event[:start], event[end:]) if end > 0 else None


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
        # For an estimate, if no usage comes: each chunk's deltas, or a relayed event as
        # received (`data: {...}`), parsed only then.
        self.deltas: list[dict[str, Any] | bytes] = []
        self.last: dict[str, Any] | bytes = {}
        self._template: tuple[bytes, bytes] | None = None  # see `relays`

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        if event.data == "[DONE]":
            self.done = True
            return []
        data = orjson.loads(event.data)
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
        return [data]

    def relays(self, event: bytes) -> bool:
        """Whether this `data: {...}` event may go to the client as it came, unparsed: a
        chunk with choices in which every `usage` and `finish_reason` is null (compact
        JSON, as OpenAI writes it) and no `error` appears. Anything else is parsed (`feed`).
        Inside a JSON string a quote is escaped, so no text can pass for these keys.

        Scanning an event for those keys costs about a microsecond; most events differ
        from the one before only in their delta's text. So the last event that passed is
        kept as a template, cut around that text, and an event that is the template with
        other text (no quote in it, no backslash at its end, so the string ends where the
        template's did) passes at once: everything outside the text is the same JSON."""
        template = self._template
        if (
            template is not None
            and event.startswith(template[0])
            and event.endswith(template[1])
            and len(event) >= len(template[0]) + len(template[1])
        ):
            text = event[len(template[0]) : len(event) - len(template[1])]
            if text.find(b'"') >= 0 or text.endswith(b"\\"):
                template = None
        else:
            template = None
        if template is None:
            if (
                event.find(b'"choices":[{') < 0
                or event.count(b'"usage"') != event.count(b'"usage":null')
                or event.count(b'"finish_reason"') != event.count(b'"finish_reason":null')
                or event.find(b'"error"') >= 0
            ):
                return False
            self._template = _text_template(event)
        if self.usage is None:
            self.deltas.append(event)
        self.last = event
        return True

    def _estimate_text(self) -> str:
        parts = []
        for delta in self.deltas:
            if isinstance(delta, bytes):
                for choice in orjson.loads(delta[6:]).get("choices") or ():
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
            last = orjson.loads(self.last[6:]) if isinstance(self.last, bytes) else self.last
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
