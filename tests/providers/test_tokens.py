"""Token counts in faregate.tokens: the expected count (used by routing and by the adapters
when a provider reports none) and the bound the holds are priced at."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from faregate.mockprovider.tokens import count_tokens as mock_count_tokens
from faregate.tokens import (
    AUDIO_BYTES_PER_TOKEN,
    IMAGE_TOKENS,
    IMAGE_TOKENS_BOUND,
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    TOOLS_OVERHEAD,
    bound_text_tokens,
    chat_input_tokens,
    count_chat_input_tokens,
    count_embedding_input_tokens,
    count_text_tokens,
    embedding_input_tokens,
)


def test_text_costs_one_token_per_four_characters_rounded_up() -> None:
    assert [count_text_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


@given(st.text(), st.text())
def test_text_tokens_never_shrink_when_text_grows(a: str, b: str) -> None:
    assert count_text_tokens(a + b) >= max(count_text_tokens(a), count_text_tokens(b))


def test_chat_counts_messages_tool_calls_tools_and_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcdefgh"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "abcd", "arguments": "{}"}}
                ],
            },
        ],
    }
    expected = REPLY_OVERHEAD + 2 * MESSAGE_OVERHEAD + 2 + IMAGE_TOKENS + 1 + 1
    assert count_chat_input_tokens(body) == expected
    with_tools = {**body, "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert count_chat_input_tokens(with_tools) > expected


def test_embedding_inputs_count_text_and_token_ids() -> None:
    assert count_embedding_input_tokens("abcdefgh") == 2
    assert count_embedding_input_tokens(["abcd", "abcde"]) == 3
    assert count_embedding_input_tokens([101, 102, 103]) == 3
    assert count_embedding_input_tokens([[1, 2], [3]]) == 3
    assert count_embedding_input_tokens(None) == 0


def test_the_bound_of_a_text_is_its_utf8_bytes() -> None:
    assert bound_text_tokens("abcd") == 4
    assert bound_text_tokens("価格表") == 9  # three bytes per CJK character
    assert count_text_tokens("価格表") == 1  # the expected count runs far below


@given(st.text())
def test_the_bound_covers_the_expected_count_and_the_mock_providers_count(text: str) -> None:
    bound = bound_text_tokens(text)
    assert bound >= count_text_tokens(text)
    assert bound >= mock_count_tokens(text)  # a token of the mock is never under one byte


def test_chat_bound_counts_images_audio_files_tools_and_schemas_at_their_maximum() -> None:
    audio = "A" * 1600  # base64: 1,200 decoded bytes
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "日本語"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "input_audio", "input_audio": {"data": audio, "format": "mp3"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,QUJD"}},
                ],
            }
        ],
    }
    expected, bound = chat_input_tokens(body)
    assert expected == REPLY_OVERHEAD + MESSAGE_OVERHEAD + 1 + IMAGE_TOKENS
    file_chars = len("data:application/pdf;base64,QUJD")
    assert bound == (
        REPLY_OVERHEAD
        + MESSAGE_OVERHEAD
        + 9
        + IMAGE_TOKENS_BOUND
        + 1200 // AUDIO_BYTES_PER_TOKEN
        + file_chars
    )
    tools = [{"type": "function", "function": {"name": "f"}}]
    _, with_tools = chat_input_tokens({**body, "tools": tools})
    assert with_tools - bound == TOOLS_OVERHEAD + len(
        b'[{"type":"function","function":{"name":"f"}}]'
    )
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}
    _, with_schema = chat_input_tokens({**body, "response_format": schema})
    assert with_schema > bound
    assert count_chat_input_tokens({**body, "response_format": schema}) == expected


def test_embedding_bound_counts_bytes_and_token_ids_exactly() -> None:
    assert embedding_input_tokens("価格") == (1, 6)
    assert embedding_input_tokens([101, 102]) == (2, 2)
    assert embedding_input_tokens([[1, 2], "ab"]) == (3, 4)


def test_thinking_passed_back_to_claude_counts_as_input() -> None:
    thinking = "Let me think about the weather. " * 10
    plain = {"role": "assistant", "content": "Sunny"}
    thought = {
        **plain,
        "thinking_blocks": [
            {"type": "thinking", "thinking": thinking, "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk" * 10},
        ],
    }
    without, with_thinking = (
        chat_input_tokens({"messages": [message]}) for message in (plain, thought)
    )
    assert with_thinking[0] - without[0] == count_text_tokens(thinking)
    assert with_thinking[1] - without[1] == len(thinking) + len("ZW5jcnlwdGVk" * 10)
