"""Cache keys depend on what changes the answer and on nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from faregate.cache import cache_key

CHAT: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}


def test_the_key_is_stable_across_field_order_and_ignored_fields() -> None:
    reordered = {"temperature": 0, "messages": CHAT["messages"], "model": "gpt-4o"}
    noisy = CHAT | {"user": "u1", "metadata": {"a": 1}, "stream": True, "stream_options": {}}
    assert cache_key("chat", CHAT) == cache_key("chat", reordered) == cache_key("chat", noisy)
    assert cache_key("chat", CHAT).startswith("chat:") and len(cache_key("chat", CHAT)) == 45


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o-mini"},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"temperature": 0.2},
        {"max_tokens": 5},
        {"seed": 1},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True},
        {"reasoning_effort": "high"},
        {"n": 2},
    ],
)
def test_every_output_parameter_changes_the_key(change: dict[str, Any]) -> None:
    assert cache_key("chat", CHAT | change) != cache_key("chat", CHAT)


@pytest.mark.parametrize(
    "change",
    [{"top_k": 1}, {"safe_prompt": True}, {"guided_json": {"type": "object"}}, {"thinking": {}}],
)
def test_fields_faregate_does_not_know_change_the_key(change: dict[str, Any]) -> None:
    """They reach the upstream and may change its answer: a hit for one was served to the
    other when the key took only the parameters it knew."""
    assert cache_key("chat", CHAT | change) != cache_key("chat", CHAT)


def test_keys_made_before_stay_the_same() -> None:
    """Entries stored (on Redis) before unknown fields entered the key are still found."""
    chat = CHAT | {
        "max_completion_tokens": 9,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "user": "u",
    }
    assert cache_key("chat", chat) == "chat:48843577d812502fc994f847eef189a3cb3d8afc"
    assert cache_key("embeddings", {"model": "e", "input": "x", "dimensions": 8}) == (
        "embeddings:468304751d7eb2289dbfc25727b0c57a6b1cbf65"
    )
    assert cache_key("images", {"model": "dall-e-3", "prompt": "a cat", "size": "1024x1024"}) == (
        "images:7caa7117c0394f5a81db494c8ff2a786db5c8266"
    )


def test_equivalent_spellings_share_a_key() -> None:
    assert cache_key("chat", CHAT | {"max_tokens": 9}) == cache_key(
        "chat", CHAT | {"max_completion_tokens": 9}
    )
    assert cache_key("chat", CHAT | {"stop": "x"}) == cache_key("chat", CHAT | {"stop": ["x"]})
    assert cache_key("chat", CHAT | {"temperature": 0.0}) == cache_key("chat", CHAT)
    assert cache_key("chat", CHAT | {"n": 1, "top_p": 1}) == cache_key("chat", CHAT)
    embed = {"model": "e", "input": "x"}
    assert cache_key("embeddings", embed) == cache_key(
        "embeddings", embed | {"encoding_format": "float"}
    )


def test_kinds_and_namespaces_never_share_keys() -> None:
    body = {"model": "m", "prompt": "a cat", "input": "a cat"}
    assert cache_key("images", body) != cache_key("embeddings", body)
    assert cache_key("images", body, namespace="acme") != cache_key("images", body)
    image = {"model": "dall-e-3", "prompt": "a cat"}
    assert cache_key("images", image | {"size": "1024x1792"}) != cache_key("images", image)


def test_unknown_kinds_have_no_key() -> None:
    with pytest.raises(ValueError):
        cache_key("moderations", {"input": "x"})
