"""Pre-flight content rules: whole-word keywords, regexes, who they apply to, the text of
every request kind, and the provider hook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from faregate.config import ConfigError
from faregate.policy import ContentBlocked, Moderator, Subject, parse_moderation, request_texts

DESIGN = Subject(key_id="k1", team_id="design")
OTHER = Subject(key_id="k2", team_id="sales")


def moderator(*policies: dict[str, Any], provider: Any = None) -> Moderator:
    return Moderator(parse_moderation({"policies": list(policies)}), provider)


SECRETS = {
    "id": "secrets",
    "keywords": ["falcon", "internal  only", "c++"],
    "regex": [r"AKIA[0-9A-Z]{16}"],
    "apply_to": {"teams": ["design"]},
}


@pytest.mark.parametrize(
    ("text", "matched"),
    [
        ("Tell me about Project FALCON.", "falcon"),
        ("this is INTERNAL\nonly", "internal  only"),
        ("I write C++ daily", "c++"),
        ("key AKIAABCDEFGHIJKLMNOP leaked", r"AKIA[0-9A-Z]{16}"),
    ],
)
def test_keywords_and_regexes_block(text: str, matched: str) -> None:
    verdict = moderator(SECRETS).check(DESIGN, ["hello", text])
    assert (verdict.blocked, verdict.policy_id, verdict.matched) == (True, "secrets", matched)


@pytest.mark.parametrize("text", ["falconry is old", "the falcons", "internally only", "abc++"])
def test_keywords_match_whole_words_only(text: str) -> None:
    assert not moderator(SECRETS).check(DESIGN, [text]).blocked


def test_policies_apply_to_their_teams_keys_or_everyone() -> None:
    m = moderator(
        SECRETS,
        {"id": "k2-only", "keywords": ["quota"], "apply_to": {"keys": ["k2"]}},
        {"id": "all", "keywords": ["forbidden"], "apply_to": "default"},
    )
    assert not m.check(OTHER, ["falcon"]).blocked
    assert m.check(OTHER, ["quota"]).policy_id == "k2-only"
    assert not m.check(DESIGN, ["quota"]).blocked
    assert m.check(Subject(), ["Forbidden!"]).policy_id == "all"


def test_a_flag_policy_reports_without_blocking_and_a_block_wins() -> None:
    m = moderator(
        {"id": "watch", "keywords": ["refund"], "action": "flag"},
        {"id": "stop", "keywords": ["chargeback"]},
    )
    flagged = m.check(OTHER, ["refund please"])
    assert (flagged.blocked, flagged.policy_id) == (False, "watch")
    assert m.check(OTHER, ["refund or chargeback"]).policy_id == "stop"


def test_a_blocked_verdict_raises_without_echoing_the_text() -> None:
    verdict = moderator(SECRETS).check(DESIGN, ["AKIAABCDEFGHIJKLMNOP"])
    with pytest.raises(ContentBlocked) as blocked:
        verdict.raise_if_blocked()
    error = blocked.value
    assert (error.status, error.type, error.code) == (
        400,
        "invalid_request_error",
        "content_policy_violation",
    )
    assert "AKIA" not in error.message and "secrets" in error.message
    moderator(SECRETS).check(DESIGN, ["fine"]).raise_if_blocked()


def test_request_texts_cover_every_kind() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f", "arguments": '{"q": "args"}'}}],
            },
        ]
    }
    assert request_texts("chat", chat) == ["sys", "part", '{"q": "args"}']
    assert request_texts("embeddings", {"input": ["a", "b"]}) == ["a", "b"]
    assert request_texts("embeddings", {"input": [[1, 2, 3]]}) == []
    assert request_texts("images", {"prompt": "a cat"}) == ["a cat"]


class Provider:
    def __init__(self, flagged: bool) -> None:
        self.result = flagged
        self.calls: list[Sequence[str]] = []

    async def flagged(self, texts: Sequence[str]) -> bool:
        self.calls.append(texts)
        return self.result


async def test_local_rules_run_before_the_provider() -> None:
    provider = Provider(flagged=True)
    m = moderator(SECRETS | {"provider": True}, provider=provider)
    assert (await m.check_async(DESIGN, ["falcon"])).matched == "falcon"
    assert provider.calls == []
    verdict = await m.check_async(DESIGN, ["harmless"])
    assert (verdict.blocked, verdict.policy_id, verdict.matched) == (True, "secrets", "provider")
    assert provider.calls == [["harmless"]]


async def test_the_provider_is_asked_only_for_policies_that_want_it() -> None:
    provider = Provider(flagged=True)
    m = moderator(SECRETS | {"provider": True}, provider=provider)
    assert not (await m.check_async(OTHER, ["harmless"])).blocked
    assert not (
        await moderator(SECRETS, provider=Provider(True)).check_async(DESIGN, ["x"])
    ).blocked
    assert provider.calls == []
    assert not (
        await moderator(SECRETS | {"provider": True}, provider=Provider(False)).check_async(
            DESIGN, ["x"]
        )
    ).blocked


@pytest.mark.parametrize(
    "policy",
    [
        {"keywords": ["x"]},
        {"id": "p", "regex": ["("]},
        {"id": "p", "keywords": "not-a-list"},
        {"id": "p", "action": "shout"},
        {"id": "p", "apply_to": "teams"},
    ],
)
def test_bad_policies_are_config_errors(policy: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_moderation({"policies": [policy]})


def test_a_policy_wanting_the_provider_needs_one() -> None:
    with pytest.raises(ConfigError):
        moderator(SECRETS | {"provider": True})
