"""Token estimates in faregate.tokens (used by the adapters when a provider reports none)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from faregate.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    count_chat_input_tokens,
    count_embedding_input_tokens,
    count_text_tokens,
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
