"""The Gemini API wire format (generateContent, streamGenerateContent, batchEmbedContents),
translated to and from OpenAI's shapes. Request mapping lives in gemini_request.py; this
module holds the adapter, response, usage and error mapping, and the stream parser.
"""

from __future__ import annotations

import base64
import os
import struct
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
    StreamState,
)
from faregate.providers.gemini_request import embed_request, generate_request, new_tool_call_id
from faregate.providers.http import ErrorDetail, SSEEvent, Upstream, bad_response, stream_cut
from faregate.providers.shape import (
    chunk,
    completion,
    delta_choice,
    tool_call,
    unsupported,
)
from faregate.providers.transport import HttpTransport
from faregate.usage import Usage

API_VERSION = "v1beta"
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# ErrorInfo reasons that mean the gateway's own key is wrong, though Google answers 400.
AUTH_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"}
)
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
INPUT_TOKEN_COUNT = "The input token count"
TOKENS_ALLOWED = "exceeds the maximum number of tokens allowed"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code for the same refusal


class GeminiProvider:
    """Chat (plain and streamed, with tools and images) and embeddings on the Gemini API."""

    wire: ClassVar[str] = "gemini"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"chat", "chat_stream", "tools", "vision", "embeddings"}
    )

    def __init__(
        self, endpoint: Endpoint, session: aiohttp.ClientSession, transport: HttpTransport
    ) -> None:
        headers = {"x-goog-api-key": endpoint.api_key} if endpoint.api_key else {}
        self.http = Upstream(endpoint, session, headers, parse_error, transport)
        version = str(endpoint.option("api_version", API_VERSION))
        self.base_url = f"{endpoint.base_url.rstrip('/')}/{version}/models"

    def _url(self, model: str, method: str) -> str:
        return f"{self.base_url}/{model.removeprefix('models/')}:{method}"

    async def chat(self, body: dict[str, Any], model: str) -> ChatResult:
        request = generate_request(body)
        return await self.http.post_json(
            self._url(model, "generateContent"), request, lambda data: chat_result(data, model)
        )

    async def chat_stream(
        self, body: dict[str, Any], model: str, state: StreamState
    ) -> AsyncIterator[dict[str, Any]]:
        request = generate_request(body)
        parser = StreamParser(body, model, state, self.http)
        url = self._url(model, "streamGenerateContent") + "?alt=sse"
        async for item in self.http.stream(url, request, parser, state):
            yield item

    async def embeddings(self, body: dict[str, Any], model: str) -> EmbeddingsResult:
        model = model.removeprefix("models/")
        return await self.http.post_json(
            self._url(model, "batchEmbedContents"),
            embed_request(body, model),
            lambda data: embeddings_result(data, body, model),
        )

    async def images(self, body: dict[str, Any], model: str) -> ImagesResult:
        raise unsupported("image generation")

    async def aclose(self) -> None:
        """Nothing to release: the session belongs to the app."""


# -- response and usage mapping ----------------------------------------------------------


def usage_from_gemini(raw: dict[str, Any]) -> Usage:
    """promptTokenCount includes the cached prefix; candidatesTokenCount excludes thoughts,
    which the canonical output count includes."""
    thoughts = int(raw.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0),
        output_tokens=int(raw.get("candidatesTokenCount") or 0) + thoughts,
        cached_input_tokens=int(raw.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def finish_reason(reason: Any, has_calls: bool) -> str:
    mapped = FINISH_REASONS.get(str(reason), "stop")
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def candidate_message(candidate: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """(text, tool calls, thoughts) of a candidate: thought parts (the summaries a request
    with includeThoughts gets) are its thoughts, not its text."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            call = part["functionCall"]
            call_id = new_tool_call_id(part.get("thoughtSignature"))
            calls.append(tool_call(call_id, call["name"], call.get("args") or {}))
        elif "text" in part:
            (thoughts if part.get("thought") else text).append(part["text"])
    return "".join(text), calls, "".join(thoughts)


def _token(candidate: dict[str, Any]) -> dict[str, Any]:
    token = str(candidate.get("token") or "")
    return {
        "token": token,
        "logprob": float(candidate.get("logProbability") or 0.0),
        "bytes": list(token.encode()),
    }


def logprobs_of(candidate: dict[str, Any]) -> dict[str, Any] | None:
    """A candidate's logprobsResult (with responseLogprobs) as OpenAI's choice `logprobs`:
    each chosen token with the top candidates of its step; None without one."""
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    tops = result.get("topCandidates") or ()
    content = []
    for step, chosen in enumerate(result.get("chosenCandidates") or ()):
        top = (tops[step].get("candidates") or ()) if step < len(tops) else ()
        content.append({**_token(chosen), "top_logprobs": [_token(t) for t in top]})
    return {"content": content, "refusal": None}


def _choice(candidate: dict[str, Any], position: int) -> dict[str, Any]:
    text, calls, thoughts = candidate_message(candidate)
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    message["refusal"] = None
    if thoughts:  # as DeepSeek and LiteLLM give reasoning
        message["reasoning_content"] = thoughts
    return {
        "index": int(candidate.get("index", position)),
        "message": message,
        "logprobs": logprobs_of(candidate),
        "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
    }


def chat_result(data: Any, model: str) -> ChatResult:
    if not isinstance(data, dict):
        raise bad_response("The upstream provider sent a malformed response body.")
    choices = [_choice(c, i) for i, c in enumerate(data.get("candidates") or ())]
    if not choices:
        if not (data.get("promptFeedback") or {}).get("blockReason"):
            raise bad_response("The upstream provider sent a response without candidates.")
        message = {"role": "assistant", "content": None, "refusal": None}
        choices = [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"}
        ]
    usage = usage_from_gemini(data.get("usageMetadata") or {})
    body = completion(
        str(data.get("responseId") or "chatcmpl-" + os.urandom(12).hex()),
        str(data.get("modelVersion") or model),
        int(time.time()),
        choices,
        usage,
    )
    return ChatResult(body=body, usage=usage)


def _encode(values: list[float], encoding: Any) -> Any:
    if encoding != "base64":
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def embeddings_result(data: Any, body: dict[str, Any], model: str) -> EmbeddingsResult:
    """Gemini reports no token usage for embeddings: it is estimated."""
    vectors = data["embeddings"]
    count = tokens.count_embedding_input_tokens(body.get("input"))
    encoding = body.get("encoding_format")
    result = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v["values"], encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }
    return EmbeddingsResult(body=result, usage=Usage(input_tokens=count, estimated=True))


# -- error mapping ---------------------------------------------------------------------


def parse_error(body: Any) -> ErrorDetail:
    """`{"error": {"code", "message", "status", "details": [...]}}`. Google's 400 carries
    no code finer than INVALID_ARGUMENT, except ErrorInfo reasons for a bad API key."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, list) and error:  # some proxies wrap the error in a list
        error = error[0].get("error") if isinstance(error[0], dict) else None
    if not isinstance(error, dict):
        return ErrorDetail()
    reasons = {
        d.get("reason")
        for d in error.get("details") or ()
        if isinstance(d, dict) and d.get("@type") == ERROR_INFO
    }
    message = error.get("message")
    if not isinstance(message, str):
        message = None
    elif error.get("status") == "INVALID_ARGUMENT" and _over_context_window(message):
        return ErrorDetail(message=message, code=CONTEXT_LENGTH_EXCEEDED, param="messages")
    return ErrorDetail(message=message, status=401 if reasons & AUTH_REASONS else None)


def _over_context_window(message: str) -> bool:
    """Google marks a prompt over the context window only in its message ("The input token
    count (N) exceeds the maximum number of tokens allowed (M)."): OpenAI's
    `context_length_exceeded`, which failover acts on."""
    return message.startswith(INPUT_TOKEN_COUNT) and TOKENS_ALLOWED in message


def error_status(body: dict[str, Any]) -> int:
    """The HTTP status of an error that arrives inside a stream (Google's `code`)."""
    code = (body.get("error") or {}).get("code")
    return code if isinstance(code, int) and 400 <= code < 600 else 500


# -- stream parsing --------------------------------------------------------------------


class StreamParser:
    """Each SSE event is a whole GenerateContentResponse: its candidates become chunk
    choices (tool calls arrive whole), and a usage-only chunk (`choices: []`) ends it."""

    def __init__(
        self, body: dict[str, Any], model: str, state: StreamState, http: Upstream
    ) -> None:
        self.body = body
        self.state = state
        self.http = http
        self.id = "chatcmpl-" + os.urandom(12).hex()
        self.model = model
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.started: set[int] = set()
        self.calls: dict[int, int] = {}  # choice index -> tool calls sent so far
        self.finished: dict[int, str] = {}

    def feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        data = orjson.loads(event.data)
        if "error" in data:
            raise self.http.detail_error(error_status(data), data)
        self.model = str(data.get("modelVersion") or self.model)
        if data.get("usageMetadata"):  # cumulative: the usage so far, on each chunk
            self.usage = data["usageMetadata"]
            self.state.reported = usage_from_gemini(self.usage)
        choices = [
            choice
            for position, candidate in enumerate(data.get("candidates") or ())
            if (choice := self._candidate(candidate, position)) is not None
        ]
        if not data.get("candidates") and (data.get("promptFeedback") or {}).get("blockReason"):
            self.finished[0] = "content_filter"
            choices.append(delta_choice(0, {"role": "assistant"}, "content_filter"))
        return [chunk(self.id, self.model, self.created, choices)] if choices else []

    def _candidate(self, candidate: dict[str, Any], position: int) -> dict[str, Any] | None:
        index = int(candidate.get("index", position))
        text, calls, thoughts = candidate_message(candidate)
        delta: dict[str, Any] = {}
        if index not in self.started:
            self.started.add(index)
            delta["role"] = "assistant"
        if thoughts:
            delta["reasoning_content"] = thoughts
        if text:
            delta["content"] = text
        if calls:
            first = self.calls.get(index, 0)
            delta["tool_calls"] = [{"index": first + k, **call} for k, call in enumerate(calls)]
            self.calls[index] = first + len(calls)
        finish = None
        if candidate.get("finishReason"):
            finish = finish_reason(candidate["finishReason"], index in self.calls)
            self.finished[index] = finish
        if not delta and finish is None:
            return None
        choice = delta_choice(index, delta, finish)
        if "logprobsResult" in candidate:
            choice["logprobs"] = logprobs_of(candidate)
        return choice

    def close(self) -> list[dict[str, Any]]:
        if not self.finished:
            raise stream_cut()
        if self.usage:
            usage = usage_from_gemini(self.usage)
        else:
            usage = Usage(input_tokens=tokens.count_chat_input_tokens(self.body), estimated=True)
        self.state.usage = usage
        self.state.finish_reason = self.finished.get(0) or next(iter(self.finished.values()))
        return [chunk(self.id, self.model, self.created, [], usage)]
