"""Gemini adapter mapping on wire examples from the Gemini API reference."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from faregate.providers.base import ProviderError, StreamState
from faregate.providers.gemini import (
    StreamParser,
    chat_result,
    embeddings_result,
    parse_error,
    usage_from_gemini,
)
from faregate.providers.gemini_request import embed_request, generate_request
from tests.providers.wire import offline, run_sse

LIGHTS = {
    "type": "function",
    "function": {
        "name": "set_light_values",
        "description": "Sets the brightness and color temperature.",
        "parameters": {
            "type": "object",
            "properties": {"brightness": {"type": "integer"}, "color_temp": {"type": "string"}},
            "required": ["brightness", "color_temp"],
            "additionalProperties": False,
        },
    },
}

FUNCTION_CALL_RESPONSE: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {
                            "name": "set_light_values",
                            "args": {"brightness": 25, "color_temp": "warm"},
                        },
                        "thoughtSignature": "c2lnbmF0dXJl",
                    }
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 120,
        "candidatesTokenCount": 12,
        "totalTokenCount": 232,
        "cachedContentTokenCount": 64,
        "thoughtsTokenCount": 100,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-1",
}

STREAM = """\
data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash"}

data: {"candidates": [{"content": {"parts": [{"text": " sky is blue."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 5,"totalTokenCount": 30,"thoughtsTokenCount": 16},"modelVersion": "gemini-2.5-flash"}

"""


def test_messages_map_to_contents_system_instruction_and_config() -> None:
    request = generate_request(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    ],
                },
                {"role": "assistant", "content": "A cat."},
                {"role": "user", "content": "More"},
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 64,
            "stop": ["END"],
            "n": 2,
            "seed": 7,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "object", "additionalProperties": False},
                },
            },
        }
    )
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert request["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Describe"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
            ],
        },
        {"role": "model", "parts": [{"text": "A cat."}]},
        {"role": "user", "parts": [{"text": "More"}]},
    ]
    assert request["generationConfig"] == {
        "temperature": 0.5,
        "topP": 0.9,
        "candidateCount": 2,
        "seed": 7,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "additionalProperties": False},
    }


def test_system_text_parts_stay_apart() -> None:
    request = generate_request(
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "one"}]},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "user", "content": "Hi"},
            ]
        }
    )
    assert request["systemInstruction"] == {"parts": [{"text": "one"}, {"text": "two"}]}


def test_tools_tool_choice_and_tool_results_round_trip() -> None:
    result = chat_result(FUNCTION_CALL_RESPONSE, "gemini-2.5-flash")
    call = result.body["choices"][0]["message"]["tool_calls"][0]
    request = generate_request(
        {
            "messages": [
                {"role": "user", "content": "Dim the lights"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": '{"ok": true}'},
            ],
            "tools": [LIGHTS],
            "tool_choice": {"type": "function", "function": {"name": "set_light_values"}},
        }
    )
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "set_light_values",
                    "description": "Sets the brightness and color temperature.",
                    "parametersJsonSchema": LIGHTS["function"]["parameters"],
                }
            ]
        }
    ]
    assert request["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["set_light_values"]}
    }
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {
                "functionCall": {
                    "name": "set_light_values",
                    "args": {"brightness": 25, "color_temp": "warm"},
                },
                "thoughtSignature": "c2lnbmF0dXJl",
            }
        ],
    }
    assert request["contents"][2] == {
        "role": "user",
        "parts": [
            {
                "functionResponse": {
                    "name": "set_light_values",
                    "response": {"result": '{"ok": true}'},
                }
            }
        ],
    }


@pytest.mark.parametrize(
    ("choice", "mode"), [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")]
)
def test_tool_choice_strings_map_to_modes(choice: str, mode: str) -> None:
    request = generate_request(
        {"messages": [{"role": "user", "content": "x"}], "tools": [LIGHTS], "tool_choice": choice}
    )
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


def test_a_tool_result_without_its_call_is_a_client_error() -> None:
    with pytest.raises(ProviderError) as info:
        generate_request({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "1"}]})
    assert (info.value.status, info.value.param) == (400, "messages[0].tool_call_id")


def test_function_calls_become_tool_calls_and_usage_includes_thoughts() -> None:
    result = chat_result(FUNCTION_CALL_RESPONSE, "gemini-2.5-flash")
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert orjson.loads(call["function"]["arguments"]) == {"brightness": 25, "color_temp": "warm"}
    usage = result.usage
    assert (usage.input_tokens, usage.cached_input_tokens) == (120, 64)
    assert (usage.output_tokens, usage.reasoning_tokens) == (112, 100)
    assert result.body["model"] == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
    ],
)
def test_finish_reasons_map(reason: str, finish: str) -> None:
    data = {
        "candidates": [
            {"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": reason}
        ],
        "usageMetadata": {},
    }
    assert chat_result(data, "g").body["choices"][0]["finish_reason"] == finish


def test_a_blocked_prompt_is_a_content_filter_finish() -> None:
    data = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    result = chat_result(data, "g")
    assert result.body["choices"][0]["finish_reason"] == "content_filter"
    assert result.usage.input_tokens == 5


def test_thought_parts_are_not_content() -> None:
    data = {
        "candidates": [
            {
                "content": {"parts": [{"text": "hmm", "thought": True}, {"text": "Answer"}]},
                "finishReason": "STOP",
            }
        ]
    }
    message = chat_result(data, "g").body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"]) == ("Answer", "hmm")


def test_streamed_thought_parts_are_reasoning_content() -> None:
    record = {
        "candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]}, "index": 0}]
    }
    stream = f"data: {orjson.dumps(record).decode()}\n\n" + STREAM
    chunks = run_sse(StreamParser({}, "g", StreamState(), offline("gemini", parse_error)), stream)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "reasoning_content": "hmm"}


HELLO = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("thinking", "config"),
    [
        (
            {"type": "enabled", "budget_tokens": 2048},
            {"thinkingBudget": 2048, "includeThoughts": True},
        ),
        (
            {"type": "enabled", "budget_tokens": 64000},
            {"thinkingBudget": 24576, "includeThoughts": True},
        ),
        (
            {"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
            {"thinkingBudget": 2048},
        ),
        ({"type": "adaptive"}, {"thinkingBudget": -1, "includeThoughts": True}),
        ({"type": "disabled"}, None),
        ({"type": "between_tools"}, None),
    ],
)
def test_the_messages_apis_thinking_becomes_a_thinking_config(
    thinking: dict[str, Any], config: dict[str, Any] | None
) -> None:
    request = generate_request({"messages": HELLO, "thinking": thinking})
    assert (request.get("generationConfig") or {}).get("thinkingConfig") == config


def test_stream_records_become_chunks_and_a_usage_chunk() -> None:
    state = StreamState()
    chunks = run_sse(StreamParser({}, "g", state, offline("gemini", parse_error)), STREAM)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "The"}
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": " sky is blue."},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 21
    assert state.usage == usage_from_gemini(
        {"promptTokenCount": 9, "candidatesTokenCount": 5, "thoughtsTokenCount": 16}
    )
    assert state.finish_reason == "stop"


def test_a_stream_without_a_finish_reason_is_cut() -> None:
    with pytest.raises(ProviderError) as info:
        run_sse(
            StreamParser({}, "g", StreamState(), offline("gemini", parse_error)),
            STREAM.split("\n\n")[0] + "\n\n",
        )
    assert info.value.code == "upstream_disconnected"


def test_an_invalid_api_key_is_an_upstream_auth_error() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
            ],
        }
    }
    assert parse_error(body).status == 401
    plain = {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    assert (parse_error(plain).status, parse_error(plain).message) == (None, "bad")


def test_embeddings_map_to_batch_requests_and_back() -> None:
    assert embed_request({"input": ["a", "b"], "dimensions": 8}, "text-embedding-004") == {
        "requests": [
            {
                "model": "models/text-embedding-004",
                "content": {"parts": [{"text": t}]},
                "outputDimensionality": 8,
            }
            for t in ("a", "b")
        ]
    }
    data = {"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 2.0]}]}
    result = embeddings_result(data, {"input": ["a", "b"]}, "text-embedding-004")
    assert [d["embedding"] for d in result.body["data"]] == [[0.5, -1.0], [0.25, 2.0]]
    assert result.usage.estimated and result.usage.input_tokens == 2
    encoded = embeddings_result(data, {"input": ["a", "b"], "encoding_format": "base64"}, "m")
    raw = base64.b64decode(encoded.body["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (0.5, -1.0)


def test_an_input_over_the_context_window_is_openais_context_length_exceeded() -> None:
    message = (
        "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
    )
    body = {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}
    detail = parse_error(body)
    assert (detail.code, detail.param, detail.message) == (
        "context_length_exceeded",
        "messages",
        message,
    )


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("none", 0), ("minimal", 1024), ("low", 1024), ("medium", 8192), ("high", 24576)],
)
def test_reasoning_effort_becomes_a_thinking_budget(effort: str, budget: int) -> None:
    request = generate_request({"messages": HELLO, "reasoning_effort": effort})
    assert request["generationConfig"]["thinkingConfig"] == {"thinkingBudget": budget}


def test_an_unknown_reasoning_effort_is_a_400_naming_it() -> None:
    with pytest.raises(ProviderError) as info:
        generate_request({"messages": HELLO, "reasoning_effort": "extreme"})
    assert (info.value.status, info.value.param) == (400, "reasoning_effort")


def test_logprobs_ask_for_response_logprobs_and_top_candidates() -> None:
    config = generate_request({"messages": HELLO, "logprobs": True, "top_logprobs": 2})
    assert config["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}
    assert "generationConfig" not in generate_request({"messages": HELLO, "logprobs": False})


LOGPROBS = {
    "chosenCandidates": [
        {"token": "Hi", "tokenId": 1, "logProbability": -0.25},
        {"token": "!", "tokenId": 2, "logProbability": -1.5},
    ],
    "topCandidates": [
        {"candidates": [{"token": "Hi", "tokenId": 1, "logProbability": -0.25}]},
        {
            "candidates": [
                {"token": "!", "tokenId": 2, "logProbability": -1.5},
                {"token": ".", "logProbability": -2.0},
            ]
        },
    ],
}


def test_a_logprobs_result_becomes_openais_choice_logprobs() -> None:
    candidate = {
        "content": {"parts": [{"text": "Hi!"}]},
        "finishReason": "STOP",
        "logprobsResult": LOGPROBS,
    }
    logprobs = chat_result({"candidates": [candidate]}, "g").body["choices"][0]["logprobs"]
    assert logprobs["refusal"] is None
    first, second = logprobs["content"]
    assert first == {
        "token": "Hi",
        "logprob": -0.25,
        "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}],
    }
    assert [t["token"] for t in second["top_logprobs"]] == ["!", "."]


def test_streamed_logprobs_come_on_their_chunks() -> None:
    record = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Hi!"}]},
                "finishReason": "STOP",
                "logprobsResult": LOGPROBS,
            }
        ]
    }
    stream = f"data: {orjson.dumps(record).decode()}\n\n"
    chunks = run_sse(StreamParser({}, "g", StreamState(), offline("gemini", parse_error)), stream)
    assert [t["token"] for t in chunks[0]["choices"][0]["logprobs"]["content"]] == ["Hi", "!"]
