"""Fast, dependency-free token counts of a request body, made before any provider reports:
the expected count (routing, rate limits, estimated usage) and an upper bound (the holds on
wallets and budgets). No tokenizer: this runs on every request.

Expected: OpenAI's rule of thumb, one token is about four characters of English text, so a
text costs ceil(len(text) / 4). Code and non-Latin scripts run higher, so it is no bound.

Bound: the UTF-8 byte length of the text. Every token of a byte-level BPE (OpenAI, Anthropic,
Mistral, Llama 3) and of a SentencePiece vocabulary with byte fallback (Gemini, Llama 2)
covers at least one byte of its text, so no tokenizer makes more tokens than bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

# OpenAI's documented chat framing: each message costs a few tokens of markup around its
# content, and every reply is primed with a few more.
MESSAGE_OVERHEAD = 4
REPLY_OVERHEAD = 3
# Expected tokens of an image part: "high" detail for a 1024x1024 picture in OpenAI's tile
# arithmetic (85 + 4 tiles x 170).
IMAGE_TOKENS = 765
# The most tokens one image part may cost on a model priced per token, whatever its size:
# OpenAI high detail fits an image in 2048 px, scales its short side to 768 px and bills
# 85 + 170 per 512-px tile, at most 8 tiles (1,445); the patch-billed models count at most
# 1,536 32-px patches times their multiplier (gpt-4.1-nano 2.46: 3,779); Anthropic resizes
# an image to at most ~1.15 megapixels at 750 px a token (~1,600); Gemini bills 258 tokens
# per 768-px tile of a resized image. Models that bill images at a large multiple of the
# text rate to keep an image's price level (gpt-4o-mini: 2,833 + 5,667 a tile) can exceed it.
IMAGE_TOKENS_BOUND = 4096
# Audio parts: one token per 16 decoded bytes bounds any codec at 4 kbit/s or more (512
# bytes a second) at 32 tokens a second, Gemini's audio rate; OpenAI's is about 10.
AUDIO_BYTES_PER_TOKEN = 16
# Tool definitions: the provider renders them with framing of its own; Anthropic documents
# a tool-use system prompt of at most 346 tokens, added to every request that offers tools.
TOOLS_OVERHEAD = 512


def count_text_tokens(text: str) -> int:
    """ceil(len(text) / 4): about four characters per token."""
    return (len(text) + 3) // 4


def count_text_tokens_of(chars: int) -> int:
    """count_text_tokens of a text of `chars` characters."""
    return (chars + 3) // 4


def bound_text_tokens(text: str) -> int:
    """The UTF-8 byte length of `text`: no byte-level tokenizer makes more tokens."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _base64_size(part: dict[str, Any], kind: str) -> int:
    """Characters of a part's inline base64 data (`input_audio.data`, `file.file_data`)."""
    inner = part.get(kind)
    if not isinstance(inner, dict):
        return 0
    data = inner.get("data") if kind == "input_audio" else inner.get("file_data")
    return len(data) if isinstance(data, str) else 0


def _part_tokens(part: Any) -> tuple[int, int]:
    """(expected, bound) tokens of one content part."""
    if isinstance(part, str):
        return count_text_tokens(part), bound_text_tokens(part)
    if not isinstance(part, dict):
        return 0, 0
    kind = part.get("type")
    if kind in ("image_url", "image", "input_image"):
        return IMAGE_TOKENS, IMAGE_TOKENS_BOUND
    if kind == "input_audio":
        decoded = _base64_size(part, kind) * 3 // 4
        return 0, -(-decoded // AUDIO_BYTES_PER_TOKEN)
    if kind == "file":
        # A document's text cannot hold more tokens than bytes; its base64 form is 4/3 of
        # them, which leaves room for the page images some providers add.
        return 0, _base64_size(part, kind)
    text = part.get("text") or part.get("refusal")
    if not isinstance(text, str):
        return 0, 0
    return count_text_tokens(text), bound_text_tokens(text)


def _content_tokens(content: Any) -> tuple[int, int]:
    if isinstance(content, str):
        return count_text_tokens(content), bound_text_tokens(content)
    expected = bound = 0
    if isinstance(content, list):
        for part in content:
            e, b = _part_tokens(part)
            expected += e
            bound += b
    return expected, bound


def count_content_tokens(content: Any) -> int:
    """Expected tokens of an OpenAI message `content`: a string or a list of parts.

    Images count IMAGE_TOKENS each; audio and file parts are not counted.
    """
    return _content_tokens(content)[0]


def _message_tokens(message: dict[str, Any]) -> tuple[int, int]:
    expected, bound = _content_tokens(message.get("content"))
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            expected += count_text_tokens(value) if key == "name" else 0
            bound += bound_text_tokens(value)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for text in (str(function.get("name") or ""), str(function.get("arguments") or "")):
                expected += count_text_tokens(text)
                bound += bound_text_tokens(text)
            bound += bound_text_tokens(str(call.get("id") or ""))
    if message.get("thinking_blocks"):
        e, b = _thinking_tokens(message["thinking_blocks"])
        expected += e
        bound += b
    return expected, bound


def _thinking_tokens(blocks: Any) -> tuple[int, int]:
    """Claude's thinking blocks passed back in an assistant turn (`thinking_blocks`), which
    Claude reads as input: the thinking text; a redacted block's encrypted data bounds its
    own count."""
    expected = bound = 0
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        text = block.get("thinking")
        if isinstance(text, str):
            expected += count_text_tokens(text)
            bound += bound_text_tokens(text)
        data = block.get("data")
        if isinstance(data, str):
            bound += bound_text_tokens(data)
    return expected, bound


def count_message_tokens(message: dict[str, Any]) -> int:
    """Tokens of one message's text, name and tool calls, without the framing overhead."""
    return _message_tokens(message)[0]


def chat_input_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """(expected, bound) input tokens of a chat request: messages (text, parts, tool calls),
    tool definitions, a JSON schema asked for, framing. One pass over the body."""
    expected = bound = REPLY_OVERHEAD
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            e, b = _message_tokens(message)
            expected += MESSAGE_OVERHEAD + e
            bound += MESSAGE_OVERHEAD + b
    tools = body.get("tools")
    if tools:
        text = orjson.dumps(tools).decode()
        expected += count_text_tokens(text)
        bound += TOOLS_OVERHEAD + bound_text_tokens(text)
    schema = body.get("response_format")
    if isinstance(schema, dict) and schema.get("type") == "json_schema":
        bound += bound_text_tokens(orjson.dumps(schema).decode())
    return expected, bound


def count_chat_input_tokens(body: dict[str, Any]) -> int:
    """Expected tokens of a chat request: messages (text, tool calls), tools, framing."""
    return chat_input_tokens(body)[0]


def embedding_input_tokens(input: Any) -> tuple[int, int]:
    """(expected, bound) tokens of an embeddings (or moderations) `input`.

    A string, a list of strings, a list of token ids (counted exactly), a list of
    token-id lists, or moderation parts ({"type": "text"|"image_url", ...}).
    """
    if isinstance(input, str):
        return count_text_tokens(input), bound_text_tokens(input)
    if not isinstance(input, list) or not input:
        return 0, 0
    if all(isinstance(item, int) for item in input):
        return len(input), len(input)
    expected = bound = 0
    for item in input:
        if isinstance(item, list):
            expected += len(item)
            bound += len(item)
        else:
            e, b = _part_tokens(item)
            expected += e
            bound += b
    return expected, bound


def count_embedding_input_tokens(input: Any) -> int:
    """Expected tokens of an embeddings (or moderations) `input`."""
    return embedding_input_tokens(input)[0]
