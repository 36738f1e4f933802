"""Gemini generateContent, streamGenerateContent and embeddings, over raw HTTP."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from faregate.mockprovider import MockBehaviour, MockServer, count_tokens

CONTENTS = [{"role": "user", "parts": [{"text": "What is the weather in Paris?"}]}]
KEY = {"x-goog-api-key": "g-key"}
WEATHER = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "OBJECT",
                "properties": {"city": {"type": "STRING"}},
                "required": ["city"],
            },
        }
    ]
}


async def generate(
    http: aiohttp.ClientSession,
    mock: MockServer,
    body: dict[str, Any],
    model: str = "gemini-2.0-flash",
) -> dict[str, Any]:
    url = f"{mock.url}/v1beta/models/{model}:generateContent"
    async with http.post(url, json=body, headers=KEY) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def stream_sse(
    http: aiohttp.ClientSession,
    mock: MockServer,
    body: dict[str, Any],
    model: str = "gemini-2.0-flash",
) -> list[dict[str, Any]]:
    url = f"{mock.url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
    async with http.post(url, json=body, headers=KEY) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    return [json.loads(block[6:]) for block in text.strip().split("\n\n")]


def streamed_text(records: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        part.get("text", "")
        for record in records
        for candidate in record["candidates"]
        if candidate["index"] == index
        for part in candidate["content"]["parts"]
    )


async def test_generate_content_returns_candidate_and_usage_metadata(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"contents": CONTENTS, "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    reply = await generate(http, mock, body)
    [candidate] = reply["candidates"]
    assert candidate["content"]["role"] == "model"
    assert len(candidate["content"]["parts"][0]["text"].split()) == 20
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    usage = reply["usageMetadata"]
    prompt = count_tokens("Be brief.") + count_tokens(CONTENTS[0]["parts"][0]["text"]) + 8
    assert usage["promptTokenCount"] == prompt
    assert usage["candidatesTokenCount"] == 20
    assert usage["totalTokenCount"] == prompt + 20
    assert "thoughtsTokenCount" not in usage and "cachedContentTokenCount" not in usage
    assert reply["modelVersion"] == "gemini-2.0-flash" and reply["responseId"]


async def test_max_output_tokens_candidates_and_stop_sequences_are_honoured(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    config = {"maxOutputTokens": 4, "candidateCount": 2}
    reply = await generate(http, mock, {"contents": CONTENTS, "generationConfig": config})
    assert [c["finishReason"] for c in reply["candidates"]] == ["MAX_TOKENS", "MAX_TOKENS"]
    assert reply["usageMetadata"]["candidatesTokenCount"] == 8
    stopped = await generate(
        http, mock, {"contents": CONTENTS, "generationConfig": {"stopSequences": [" sit"]}}
    )
    assert stopped["candidates"][0]["content"]["parts"][0]["text"] == "Lorem ipsum dolor"
    assert stopped["candidates"][0]["finishReason"] == "STOP"


async def test_sse_stream_has_one_record_per_token_and_the_usage_so_far_on_each(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 6}}
    whole = await generate(http, mock, body)
    records = await stream_sse(http, mock, body)
    assert len(records) == 6
    prompt = whole["usageMetadata"]["promptTokenCount"]
    for sent, record in enumerate(records, start=1):  # cumulative, as Gemini reports it
        usage = record["usageMetadata"]
        assert (usage["promptTokenCount"], usage["candidatesTokenCount"]) == (prompt, sent)
    assert records[-1]["usageMetadata"] == whole["usageMetadata"]
    assert records[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert streamed_text(records) == whole["candidates"][0]["content"]["parts"][0]["text"]


async def test_stream_without_alt_sse_is_one_json_array(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = f"{mock.url}/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    body = {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 3}}
    async with http.post(url, json=body, headers=KEY) as resp:
        records = json.loads(await resp.text())
    assert len(records) == 3 and records[-1]["usageMetadata"]["candidatesTokenCount"] == 3


async def test_thinking_models_report_thoughts_outside_candidates(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 10}}
    reply = await generate(http, mock, body, model="gemini-reasoning-pro")
    usage = reply["usageMetadata"]
    assert usage["thoughtsTokenCount"] == 5 and usage["candidatesTokenCount"] == 5
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 10
    records = await stream_sse(http, mock, body, model="gemini-reasoning-pro")
    assert records[-1]["usageMetadata"] == usage


async def test_long_prompts_report_cached_content_tokens(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "z" * 8000}]}]}
    usage = (await generate(http, mock, body))["usageMetadata"]
    assert usage["promptTokenCount"] == 2004 and usage["cachedContentTokenCount"] == 1024


async def test_declared_functions_are_called_until_a_function_response_arrives(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    reply = await generate(http, mock, {"contents": CONTENTS, "tools": [WEATHER]})
    part = reply["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "mock"}}}
    records = await stream_sse(http, mock, {"contents": CONTENTS, "tools": [WEATHER]})
    assert records[-1]["candidates"][0]["content"]["parts"][0] == part
    answered = [
        *CONTENTS,
        {"role": "model", "parts": [part]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 18}}}],
        },
    ]
    reply = await generate(http, mock, {"contents": answered, "tools": [WEATHER]})
    assert "text" in reply["candidates"][0]["content"]["parts"][0]


async def test_json_mime_type_replies_with_schema_shaped_json(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    schema = {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]}
    config = {"responseMimeType": "application/json", "responseSchema": schema}
    reply = await generate(http, mock, {"contents": CONTENTS, "generationConfig": config})
    assert json.loads(reply["candidates"][0]["content"]["parts"][0]["text"]) == {"n": 1}


async def test_key_is_read_from_header_or_query(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    mock.config.default = MockBehaviour(require_key="g-key")
    url = f"{mock.url}/v1beta/models/gemini-2.0-flash:generateContent"
    async with http.post(url, json={"contents": CONTENTS}, headers=KEY) as resp:
        assert resp.status == 200
    async with http.post(url + "?key=g-key", json={"contents": CONTENTS}) as resp:
        assert resp.status == 200
    async with http.post(url + "?key=wrong", json={"contents": CONTENTS}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"
    async with http.post(url, json={"contents": CONTENTS}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["status"] == "PERMISSION_DENIED"


async def test_invalid_requests_and_context_marker_answer_invalid_argument(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    url = f"{mock.url}/v1beta/models/gemini-2.0-flash:generateContent"
    marker = [{"role": "user", "parts": [{"text": "context_length_exceeded"}]}]
    for body in ({"contents": []}, {"contents": marker}):
        async with http.post(url, json=body, headers=KEY) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and error["message"]


async def test_embed_content_and_batch_embed_contents_return_stable_vectors(
    mock: MockServer, http: aiohttp.ClientSession
) -> None:
    base = f"{mock.url}/v1beta/models/text-embedding-004"
    one = {"content": {"parts": [{"text": "hello"}]}}
    async with http.post(base + ":embedContent", json=one, headers=KEY) as resp:
        single = (await resp.json())["embedding"]["values"]
    assert len(single) == 768
    batch = {
        "requests": [
            {"model": "models/text-embedding-004", **one},
            {"model": "models/text-embedding-004", **one, "outputDimensionality": 16},
        ]
    }
    async with http.post(base + ":batchEmbedContents", json=batch, headers=KEY) as resp:
        embeddings = (await resp.json())["embeddings"]
    assert embeddings[0]["values"] == single
    assert len(embeddings[1]["values"]) == 16


async def test_a_thinking_budget_thinks_and_include_thoughts_shows_a_thought_part(
    http: aiohttp.ClientSession, mock: MockServer
) -> None:
    config = {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}
    data = await generate(http, mock, {"contents": CONTENTS, "generationConfig": config})
    thought, text = data["candidates"][0]["content"]["parts"]
    assert thought["thought"] is True and len(thought["text"].split()) == 10
    assert "thought" not in text and len(text["text"].split()) == 10
    assert data["usageMetadata"]["thoughtsTokenCount"] == 10
    hidden = {"thinkingConfig": {"thinkingBudget": 1024}}
    data = await generate(http, mock, {"contents": CONTENTS, "generationConfig": hidden})
    assert len(data["candidates"][0]["content"]["parts"]) == 1
    none = {"thinkingConfig": {"thinkingBudget": 0}}
    data = await generate(http, mock, {"contents": CONTENTS, "generationConfig": none}, "reasoning")
    assert "thoughtsTokenCount" not in data["usageMetadata"]


async def test_response_logprobs_give_each_tokens_logprob_and_top_candidates(
    http: aiohttp.ClientSession, mock: MockServer
) -> None:
    config = {"responseLogprobs": True, "logprobs": 3}
    data = await generate(http, mock, {"contents": CONTENTS, "generationConfig": config})
    candidate = data["candidates"][0]
    result = candidate["logprobsResult"]
    chosen = [c["token"] for c in result["chosenCandidates"]]
    assert "".join(chosen) == candidate["content"]["parts"][0]["text"]
    assert all(len(step["candidates"]) == 3 for step in result["topCandidates"])
    url = f"{mock.url}/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": CONTENTS, "generationConfig": {"logprobs": 3}}
    async with http.post(url, json=body, headers=KEY) as resp:
        assert resp.status == 400  # logprobs without responseLogprobs
