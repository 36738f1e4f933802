"""Gemini `models/{model}:generateContent` and `:streamGenerateContent` (SSE with `alt=sse`,
else one JSON array). Every streamed record is a GenerateContentResponse with the
`usageMetadata` so far (the last one's is the whole), whose `candidatesTokenCount` excludes
`thoughtsTokenCount`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from faregate.mockprovider import checks
from faregate.mockprovider.dialects import MockError
from faregate.mockprovider.pipeline import Call, json_response
from faregate.mockprovider.reply import (
    LENGTH,
    Ask,
    Choice,
    Reply,
    ToolCall,
    plan_reply,
    thought_pieces,
    tool_call,
)
from faregate.mockprovider.stream import sse_data
from faregate.mockprovider.tokens import WORDS, PromptTally

CONTEXT_WINDOW = 1_048_576
# "function" is the older role for turns that carry functionResponse parts.
ROLES = frozenset({"user", "model", "function"})


def field(body: Mapping[str, Any], camel: str) -> Any:
    """Google's JSON accepts lowerCamel and snake_case field names alike."""
    if camel in body:
        return body[camel]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in camel)
    return body.get(snake)


def streams_sse(request: web.Request, body: dict[str, Any]) -> bool:
    return request.query.get("alt") == "sse"


async def generate_content(call: Call) -> web.StreamResponse:
    model = call.request.match_info["model"]
    reply = plan_reply(
        _parse(model, call.body, call.behaviour.context_window), call.behaviour.output_tokens
    )
    await call.pause(reply.output_tokens)
    thinking = reply.reasoning_tokens > 0
    candidates = [
        _candidate(i, c, c.pieces, final=True, thinking=thinking)
        for i, c in enumerate(reply.choices)
    ]
    if thinking and shows_thoughts(call.body):  # the summary first, as Gemini gives it
        for candidate in candidates:
            candidate["content"]["parts"].insert(0, _thought_part(reply))
    top = logprobs_asked(call.body)
    if top is not None:
        for candidate, choice in zip(candidates, reply.choices, strict=True):
            candidate["logprobsResult"] = logprobs_result(choice.pieces, top)
    return json_response(_response(model, candidates, reply, _response_id()))


async def stream_generate_content(call: Call) -> web.StreamResponse:
    model = call.request.match_info["model"]
    reply = plan_reply(
        _parse(model, call.body, call.behaviour.context_window), call.behaviour.output_tokens
    )
    records = _records(model, reply, shows_thoughts(call.body))
    top = logprobs_asked(call.body)
    if top is not None:
        for record in records:
            for candidate in record["candidates"]:
                parts = candidate["content"]["parts"]
                pieces = [p["text"] for p in parts if "text" in p and not p.get("thought")]
                if pieces:
                    candidate["logprobsResult"] = logprobs_result(pieces, top)
    if streams_sse(call.request, call.body):
        stream = call.stream()
        frames = [sse_data(record) for record in records]
    else:  # one JSON array, written element by element
        stream = call.stream("application/json")
        frames = [b",\r\n" + orjson.dumps(record) for record in records]
        frames[0] = b"[" + frames[0][3:]
        frames[-1] += b"]"
    await stream.open()
    for frame in frames:
        await stream.send(frame)
    return await stream.close()


def _too_long(tokens: int, window: int) -> MockError:
    return MockError(
        400,
        f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
        f"({window}).",
    )


def _parse(model: str, body: Mapping[str, Any], window: int | None) -> Ask:
    tally = PromptTally()
    system = field(body, "systemInstruction")
    if isinstance(system, str):
        tally.message(system)
    elif system:
        tally.message(_parts_text(checks.mapping(system, "systemInstruction").get("parts"), tally))
    contents = checks.required_list(body, "contents")
    for index, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ROLES:
            raise MockError(400, f"* GenerateContentRequest.contents[{index}]: invalid content")
        tally.message(_parts_text(content.get("parts"), tally))
    functions = _functions(body, tally)
    if tally.overflow:
        raise _too_long(tally.tokens + CONTEXT_WINDOW, CONTEXT_WINDOW)
    if window is not None and tally.tokens > window:
        raise _too_long(tally.tokens, window)
    config = checks.mapping(field(body, "generationConfig"), "generationConfig")
    thinking = checks.mapping(field(config, "thinkingConfig"), "thinkingConfig")
    budget = _config_int(thinking, "thinkingBudget", minimum=-1)
    return Ask(
        model=model,
        prompt_tokens=tally.tokens,
        max_tokens=_config_int(config, "maxOutputTokens"),
        n=_config_int(config, "candidateCount", maximum=8) or 1,
        stop=checks.string_list(field(config, "stopSequences"), "stopSequences", limit=5),
        tool=_tool_to_call(body, functions, contents[-1], tally),
        json_schema=_json_schema(config),
        # -1: as much as the model sees fit; absent: the model's default.
        thinking=(1 << 30) if budget == -1 else budget,
    )


def _config_int(
    config: Mapping[str, Any], name: str, maximum: int | None = None, minimum: int = 1
) -> int | None:
    return checks.optional_int({name: field(config, name)}, name, maximum=maximum, minimum=minimum)


def logprobs_asked(body: Mapping[str, Any]) -> int | None:
    """The top candidates asked for each token (generationConfig.logprobs, 0 when absent)
    when responseLogprobs is true, else None; `logprobs` without it is Gemini's 400."""
    config = checks.mapping(field(body, "generationConfig"), "generationConfig")
    top = checks.optional_int(
        {"logprobs": field(config, "logprobs")}, "logprobs", minimum=0, maximum=20
    )
    if field(config, "responseLogprobs") is not True:
        if top is not None:
            raise MockError(400, "logprobs is only supported when responseLogprobs is true")
        return None
    return top or 0


def logprobs_result(pieces: Sequence[str], top: int) -> dict[str, Any]:
    """Deterministic log probabilities of the reply's tokens (one word a token): the chosen
    token's, and `top` candidates a step, the chosen one first."""
    chosen = []
    tops = []
    for step, piece in enumerate(pieces):
        logprob = -0.05 * (1 + step % 7)
        chosen.append({"token": piece, "tokenId": step, "logProbability": logprob})
        others = [
            {
                "token": " " + WORDS[(step + k) % len(WORDS)],
                "tokenId": 1000 + k,
                "logProbability": logprob - k,
            }
            for k in range(1, top)
        ]
        tops.append({"candidates": ([chosen[-1], *others] if top else [])})
    result: dict[str, Any] = {"chosenCandidates": chosen}
    if top:
        result["topCandidates"] = tops
    result["logProbabilitySum"] = sum(c["logProbability"] for c in chosen)
    return result


def shows_thoughts(body: Mapping[str, Any]) -> bool:
    """Whether the request asks for thought summaries (thinkingConfig.includeThoughts)."""
    config = field(body, "generationConfig")
    thinking = field(config, "thinkingConfig") if isinstance(config, dict) else None
    return isinstance(thinking, dict) and field(thinking, "includeThoughts") is True


def _thought_part(reply: Reply) -> dict[str, Any]:
    """A candidate's thought summary: its thinking, as a part marked `thought`."""
    tokens = reply.reasoning_tokens // len(reply.choices)
    return {"text": "".join(thought_pieces(tokens)), "thought": True}


def _parts_text(parts: Any, tally: PromptTally) -> str:
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise MockError(400, "* GenerateContentRequest: content.parts must be a list")
    texts = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif field(part, "inlineData") is not None or field(part, "fileData") is not None:
            tally.image()
        elif (fc := field(part, "functionCall")) is not None:
            texts.append(str(fc.get("name", "")) + orjson.dumps(fc.get("args") or {}).decode())
        elif (fr := field(part, "functionResponse")) is not None:
            texts.append(orjson.dumps(fr.get("response") or {}).decode())
    return "\n".join(texts)


def _functions(body: Mapping[str, Any], tally: PromptTally) -> list[Mapping[str, Any]]:
    functions: list[Mapping[str, Any]] = []
    for tool in body.get("tools") or ():
        declarations = field(tool, "functionDeclarations") if isinstance(tool, dict) else None
        for declaration in declarations or ():
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                raise MockError(400, "* FunctionDeclaration.name: a name is required")
            schema = declaration.get("parameters") or field(declaration, "parametersJsonSchema")
            tally.tool(declaration["name"], declaration.get("description") or "", schema)
            functions.append({"name": declaration["name"], "schema": schema})
    return functions


def _tool_to_call(
    body: Mapping[str, Any],
    functions: list[Mapping[str, Any]],
    last: Mapping[str, Any],
    tally: PromptTally,
) -> ToolCall | None:
    """Call a function when some are declared and the user spoke last without a response."""
    tool_config = checks.mapping(field(body, "toolConfig"), "toolConfig")
    config = checks.mapping(field(tool_config, "functionCallingConfig"), "functionCallingConfig")
    if not functions or config.get("mode") == "NONE" or last.get("role", "user") != "user":
        return None
    parts = last.get("parts")
    if isinstance(parts, list) and any(
        isinstance(p, dict) and field(p, "functionResponse") for p in parts
    ):
        return None
    allowed = field(config, "allowedFunctionNames") or ()
    target = next((f for f in functions if f["name"] in allowed), functions[0])
    return tool_call(target["name"], target["schema"], tally.last_text)


def _json_schema(config: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if field(config, "responseMimeType") != "application/json":
        return None
    schema = field(config, "responseSchema") or field(config, "responseJsonSchema")
    return checks.mapping(schema, "responseSchema")


def _usage(reply: Reply, candidates: int | None = None) -> dict[str, Any]:
    """The usage of the whole reply; with `candidates`, of a stream so far (the thinking is
    done before the first visible token, as Gemini's thinking models do)."""
    visible = reply.output_tokens - reply.reasoning_tokens
    visible = visible if candidates is None else min(candidates, visible)
    usage: dict[str, Any] = {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": visible,
        "totalTokenCount": reply.prompt_tokens + reply.reasoning_tokens + visible,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
    }
    if reply.cached_tokens:
        usage["cachedContentTokenCount"] = reply.cached_tokens
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.cached_tokens}]
    if reply.reasoning_tokens:
        usage["thoughtsTokenCount"] = reply.reasoning_tokens
    return usage


def _signature(call: ToolCall) -> str:
    """A thinking model's thoughtSignature on its function call: opaque base64 of a few
    hundred bytes, as Gemini's are (here derived from the call, so replies stay the same)."""
    seed = hashlib.sha256(orjson.dumps([call.name, call.arguments])).digest()
    return base64.b64encode(seed * 12).decode()


def _candidate(
    index: int, choice: Choice, pieces: tuple[str, ...], final: bool, thinking: bool = False
) -> dict[str, Any]:
    parts: list[dict[str, Any]]
    if choice.tool is not None:
        part = {"functionCall": {"name": choice.tool.name, "args": choice.tool.arguments}}
        if thinking:
            part["thoughtSignature"] = _signature(choice.tool)
        parts = [part]
    else:
        parts = [{"text": "".join(pieces)}]
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if final:
        candidate["finishReason"] = "MAX_TOKENS" if choice.finish == LENGTH else "STOP"
    candidate["index"] = index
    return candidate


def _response(
    model: str,
    candidates: list[dict[str, Any]],
    reply: Reply,
    response_id: str,
    sent: int | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"candidates": candidates}
    response["usageMetadata"] = _usage(reply, sent)
    response["modelVersion"] = model
    response["responseId"] = response_id
    return response


def _records(model: str, reply: Reply, thoughts: bool = False) -> list[dict[str, Any]]:
    """One record per token per candidate (after one with its thought summary, when asked
    for); each candidate's last one has its finishReason. Every record carries the usage so
    far, as Gemini's do (cumulative); the last the whole."""
    response_id = _response_id()
    records = []
    sent = 0
    for index, choice in enumerate(reply.choices):
        if thoughts and reply.reasoning_tokens:
            thought = {
                "content": {"parts": [_thought_part(reply)], "role": "model"},
                "index": index,
            }
            records.append(_response(model, [thought], reply, response_id, sent))
        chunks = [(p,) for p in choice.pieces] if choice.tool is None and choice.pieces else [()]
        for position, chunk in enumerate(chunks):
            final = position == len(chunks) - 1
            candidate = _candidate(index, choice, chunk, final, reply.reasoning_tokens > 0)
            sent += len(chunk)
            records.append(_response(model, [candidate], reply, response_id, sent))
    records[-1] = _response(model, records[-1]["candidates"], reply, response_id)
    return records


def _response_id() -> str:
    return os.urandom(12).hex()
