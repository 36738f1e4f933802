"""The built-in provider emulator: speaks OpenAI, Anthropic and Gemini wire formats with
deterministic replies and usage, configurable delays and injected faults, for the demo, the
test suite and the benchmarks. Entry points are in `server`; behaviour fields in `config`.

Routes, each also under `/d/{deployment}` (which selects `config.deployments[deployment]`,
else `config.default`): OpenAI `POST /v1/chat/completions`, `/v1/embeddings`,
`/v1/images/generations`, `/v1/moderations`, `/v1/audio/transcriptions` (multipart), `GET
/v1/models`, `GET /v1/files/images/{id}.png`; Anthropic `POST /v1/messages`, `/v1/messages/count_tokens`;
Gemini `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (`?alt=sse`
for SSE, else a JSON array), `:embedContent`, `:batchEmbedContents`. Control (never counted):
`GET /_mock/stats`, `POST /_mock/reset` (zero the counters, restart the fault sequences),
`GET /_mock/config`, `PUT` or `DELETE /_mock/deployments/{name}` (a PUT body's missing
fields come from the default behaviour). The GET routes are never faulted and need no key.

Faults, per request and in this order: `hang`; `require_key` (each provider's own header
and error); then one seeded draw picks 500/503 (Anthropic 500/529) for `error_rate`, 429
with Retry-After for `rate_limit_rate` (and `retry-after-ms` unless `retry_after_ms: false`),
a 200 truncated body for `malformed_rate`, or a 400 for `bad_request_rate`.
Streams drop the connection after `disconnect_after_chunks` events.
Streams report usage where the real APIs do: OpenAI in a last chunk (`include_usage`),
Anthropic in `message_start` (input, one output token) and `message_delta` (the whole, input
restated: its counts are cumulative),
Gemini on every record (cumulative so far; thinking counted from the first).

Usage is deterministic and identical streamed or not. Input tokens: `count_tokens(text) =
ceil(ASCII characters / 4) + other characters` of each message's text plus 4 per message (a system prompt counts as a
message), 85 per image, and `count_tokens(name + description + schema JSON)` per tool.
Output tokens per choice: `min(max_tokens, behaviour.output_tokens)`. A text reply is
exactly that many word tokens and a stream sends one content event per token; a stop
sequence cuts it short (and the count with it); tool calls and JSON replies report the
full count. Models containing "reasoning" or starting with "o1"/"o3" spend half of the
output thinking (OpenAI `reasoning_tokens`; Gemini `thoughtsTokenCount`, outside
`candidatesTokenCount`) and show the other half as text. Prompts over 1024 tokens report
1024 cached (OpenAI `cached_tokens`; Gemini `cachedContentTokenCount`). Anthropic caches
only what asks to be (a `cache_control` on a block, a tool or the request): a prompt over
1024 tokens with one writes 1024 tokens the first time it is seen
(`cache_creation_input_tokens`) and reads them on every repeat (`cache_read_input_tokens`),
both outside `input_tokens`, and splits the writes by lifetime in `cache_creation` (all
`ephemeral_1h_input_tokens` when a breakpoint says `"ttl": "1h"`). Claude thinks only when
the request's `thinking` asks (checked as Anthropic does: `budget_tokens` at least 1,024 and
below `max_tokens`): half of the output, within the budget, opens the answer as a `thinking`
block (streamed as `thinking_delta` events and a `signature_delta`; its text empty with
`display: omitted`) counted in `output_tokens` and `output_tokens_details.thinking_tokens`;
a prompt holding Anthropic's redacted-thinking test string gets a `redacted_thinking`
block instead. Thinking blocks passed back must be the mock's, unchanged (else Anthropic's
400 "Invalid `signature`"), and while thinking, the last assistant turn that used a tool
must open with its thinking. Gemini thinks within `thinkingConfig.thinkingBudget` when set
(0: not at all; -1: half of the output) and shows it as a `thought` part first when
`includeThoughts` is true; with `responseLogprobs` it gives each candidate a
`logprobsResult` (every token's log probability and, with `logprobs: N`, N top candidates a
step; `logprobs` without `responseLogprobs` is a 400). Prompt text containing
"context_length_exceeded" is refused with each provider's context-window error (400), and
so is a chat prompt (OpenAI, Anthropic, Gemini) above the deployment's `context_window`
tokens, when set.
OpenAI embeddings keep OpenAI's limits: more than 2,048 inputs, an input over 8,192 tokens
(`context_length_exceeded`) or more than 300,000 tokens in all (`max_tokens_per_request`)
is a 400 naming `input`.

Tools: when tools are offered and the user spoke last (not a tool result), the reply is one
call to the first (or the forced) tool, with placeholder values for the schema's required
fields and an id that is stable for the same request. JSON modes (OpenAI `response_format`,
Gemini `responseMimeType`, Anthropic `output_config.format`) reply with a JSON object that fits the schema.

Transcriptions: the `file` part must be a PCM WAV (read with the stdlib `wave`; anything else
is a 400 naming `file`, as OpenAI refuses a file it cannot decode). The transcript is
`behaviour.output_tokens` word tokens, in `response_format` json (`{"text", "usage"}`), text,
verbose_json (`task`, `language`, `duration`, one segment), srt or vtt (one cue over the
whole audio). whisper models report `usage: {"type": "duration", "seconds"}`, the WAV's
duration rounded up to a whole second; models starting with "gpt-4o" report tokens (10
audio tokens a second, rounded up, plus `count_tokens(prompt)` text tokens; output
`count_tokens(text)`) and accept json and text only. Text, srt and vtt carry no usage, as
OpenAI's do. Latency and faults apply as to every other route.
"""

from faregate.mockprovider.config import MockBehaviour, MockConfig
from faregate.mockprovider.server import MockServer, build_mock_app, run_mock, start_mock
from faregate.mockprovider.tokens import count_tokens

__all__ = [
    "MockBehaviour",
    "MockConfig",
    "MockServer",
    "build_mock_app",
    "count_tokens",
    "run_mock",
    "start_mock",
]
