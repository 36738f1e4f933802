"""Request mapping of the Gemini adapter: an OpenAI chat body becomes a generateContent
request, and an embeddings body a batchEmbedContents request. Pure functions; a body Gemini
cannot carry raises a 400 ProviderError.
"""

from __future__ import annotations

import os
from typing import Any

from faregate.providers.shape import (
    SIGNATURE_SEPARATOR,
    content_parts,
    content_text,
    invalid,
    max_output_tokens,
    parse_data_url,
    stop_sequences,
    tool_arguments,
)

TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
}
MAX_BUDGET = 24_576  # the largest thinkingBudget every Gemini thinking model takes
DYNAMIC_BUDGET = -1  # the model decides how much to think
EFFORT_BUDGETS = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": MAX_BUDGET,
    "xhigh": MAX_BUDGET,
    "max": MAX_BUDGET,
}
GENERATION_FIELDS = {
    "temperature": "temperature",
    "top_p": "topP",
    "top_k": "topK",  # Anthropic's, or an extra field of an OpenAI client
    "n": "candidateCount",
    "seed": "seed",
    "presence_penalty": "presencePenalty",
    "frequency_penalty": "frequencyPenalty",
}


def new_tool_call_id(signature: str | None = None) -> str:
    call_id = "call_" + os.urandom(12).hex()
    return f"{call_id}{SIGNATURE_SEPARATOR}{signature}" if signature else call_id


def _signature(call_id: Any) -> str | None:
    if not isinstance(call_id, str) or not call_id.startswith("call_"):
        return None
    return call_id.partition(SIGNATURE_SEPARATOR)[2] or None


def generate_request(body: dict[str, Any]) -> dict[str, Any]:
    """The generateContent request for an OpenAI chat body (the model goes in the URL)."""
    system, contents = map_messages(body.get("messages") or [])
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    if body.get("tools"):
        request["tools"] = [
            {"functionDeclarations": [map_tool(tool, i) for i, tool in enumerate(body["tools"])]}
        ]
        if body.get("tool_choice") is not None:
            request["toolConfig"] = {"functionCallingConfig": map_tool_choice(body["tool_choice"])}
    config = generation_config(body)
    if config:
        request["generationConfig"] = config
    return request


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config = {
        name: body[key] for key, name in GENERATION_FIELDS.items() if body.get(key) is not None
    }
    limit = max_output_tokens(body)
    if limit is not None:
        config["maxOutputTokens"] = limit
    stop = stop_sequences(body.get("stop"))
    if stop:
        config["stopSequences"] = stop
    thinking = thinking_config(body)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if body.get("logprobs") is True:
        config["responseLogprobs"] = True
        top = body.get("top_logprobs")
        if isinstance(top, int) and not isinstance(top, bool) and top > 0:
            config["logprobs"] = top
    response_format = body.get("response_format") or {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if kind == "json_schema" and schema:
            # Full JSON Schema (OpenAI strict schemas use additionalProperties, which the
            # OpenAPI-subset `responseSchema` rejects).
            config["responseJsonSchema"] = schema
    return config


def thinking_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """The Messages API's `thinking` (else OpenAI's `reasoning_effort`, `_effort_config`) as
    Gemini's thinkingConfig: `enabled` thinks within its
    budget (at most Gemini's largest, 24,576) and `adaptive` as the model sees fit
    (thinkingBudget -1), each showing its thought summaries unless `display` is `omitted`;
    `disabled`, and any other type, leaves the model's default (some Gemini models cannot
    stop thinking: a budget of 0 would be refused)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        effort = body.get("reasoning_effort")
        return None if effort is None else _effort_config(effort)
    kind = thinking.get("type")
    if kind == "enabled" and isinstance(thinking.get("budget_tokens"), int):
        config: dict[str, Any] = {"thinkingBudget": min(thinking["budget_tokens"], MAX_BUDGET)}
    elif kind == "adaptive":
        config = {"thinkingBudget": DYNAMIC_BUDGET}
    else:
        return None
    if thinking.get("display") != "omitted":
        config["includeThoughts"] = True
    return config


def _effort_config(effort: Any) -> dict[str, Any]:
    """OpenAI's `reasoning_effort` as a thinkingBudget, as Google's own OpenAI-compatible
    endpoint maps it (`none` is 0, which a model that cannot stop thinking refuses)."""
    budget = EFFORT_BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        choices = ", ".join(EFFORT_BUDGETS)
        raise invalid(f"reasoning_effort must be one of {choices}.", "reasoning_effort")
    return {"thinkingBudget": budget}


def map_tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, dict):
        raise invalid("Only function tools are supported.", f"tools[{i}]")
    declaration: dict[str, Any] = {"name": function.get("name")}
    if function.get("description"):
        declaration["description"] = function["description"]
    if function.get("parameters"):
        declaration["parametersJsonSchema"] = function["parameters"]
    return declaration


def map_tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str):
        if choice not in TOOL_MODES:
            raise invalid(f"Unknown tool_choice {choice!r}.", "tool_choice")
        return {"mode": TOOL_MODES[choice]}
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(name, str):
        raise invalid("tool_choice must name a function.", "tool_choice")
    return {"mode": "ANY", "allowedFunctionNames": [name]}


def map_messages(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system parts, contents): tool results become functionResponse parts of one user
    turn, named after the earlier tool call they answer."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    tool_turn: dict[str, Any] | None = None
    for i, message in enumerate(messages):
        role, where = message.get("role"), f"messages[{i}]"
        if role in ("system", "developer"):
            system.extend(_system_parts(message.get("content"), where))
            continue
        if role == "tool":
            if tool_turn is None:
                tool_turn = {"role": "user", "parts": []}
                contents.append(tool_turn)
            tool_turn["parts"].append(_function_response(message, names, where))
            continue
        tool_turn = None
        if role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"), where)})
        elif role == "assistant":
            parts = _model_parts(message, names, where)
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:
            raise invalid(f"Role {role!r} is not supported by this model.", f"{where}.role")
    return system, contents


def _system_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """A system message's text parts, each a part of its own (never glued)."""
    parts = []
    for j, part in enumerate(content_parts(content)):
        if part.get("type") != "text":
            raise invalid("A system message may hold only text.", f"{where}.content[{j}]")
        if part.get("text"):
            parts.append({"text": str(part["text"])})
    return parts


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    parts = []
    for j, part in enumerate(content_parts(content)):
        kind = part.get("type")
        if kind in ("text", "refusal"):  # a refusal: what an earlier assistant turn said
            if part.get(kind):
                parts.append({"text": str(part[kind])})
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url"))
            parts.append(_image(url, f"{where}.content[{j}]"))
        else:
            raise invalid(
                f"Content part type {kind!r} is not supported by this model.",
                f"{where}.content[{j}]",
            )
    return parts


def _image(url: str, where: str) -> dict[str, Any]:
    data = parse_data_url(url)
    if data is not None:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    if url.startswith(("http://", "https://", "gs://")):
        extension = url.rsplit("?", 1)[0].rsplit(".", 1)[-1].lower()
        return {"fileData": {"mimeType": IMAGE_TYPES.get(extension, "image/jpeg"), "fileUri": url}}
    raise invalid("An image must be a data: URL or an http(s) URL.", f"{where}.image_url")


def _model_parts(
    message: dict[str, Any], names: dict[str, str], where: str
) -> list[dict[str, Any]]:
    content = message.get("content")
    refusal = message.get("refusal")
    if not content and isinstance(refusal, str):  # OpenAI answered a refusal, no content
        content = refusal
    parts = _parts(content, where)
    for k, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        name = str(function.get("name") or "")
        names[str(call.get("id"))] = name
        args = tool_arguments(function.get("arguments"), f"{where}.tool_calls[{k}]")
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        signature = _signature(call.get("id"))
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(
    message: dict[str, Any], names: dict[str, str], where: str
) -> dict[str, Any]:
    call_id = str(message.get("tool_call_id"))
    if call_id not in names:
        raise invalid(
            "A tool message must answer an earlier assistant tool call.", f"{where}.tool_call_id"
        )
    for j, part in enumerate(content_parts(message.get("content"))):
        if part.get("type") != "text":
            raise invalid(
                "This model takes only text in a tool result, not an image or a document.",
                f"{where}.content[{j}]",
            )
    text = content_text(message.get("content"))
    # Google's convention: the function's output under "output" (any key works; faregate has
    # always sent "result"), an error under "error".
    key = "error" if message.get("is_error") is True else "result"
    return {"functionResponse": {"name": names[call_id], "response": {key: text}}}


def embed_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """batchEmbedContents for an OpenAI embeddings body; token-id inputs are not supported."""
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise invalid("'input' must be a string or a list of strings for this model.", "input")
    requests = []
    for text in texts:
        request: dict[str, Any] = {
            "model": f"models/{model}",
            "content": {"parts": [{"text": text}]},
        }
        if body.get("dimensions"):
            request["outputDimensionality"] = body["dimensions"]
        requests.append(request)
    return {"requests": requests}
