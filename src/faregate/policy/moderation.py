"""Pre-flight content rules per key or team: keywords and regexes compiled once at startup,
then optionally an upstream moderation call through the ModerationProvider hook. Never logs
or echoes the matched text, only which rule matched."""

# Configuration:
#
# moderation:
#   policies:
#     - id: no-secrets
#       keywords: ["project falcon", "internal only"]   # case-insensitive, whole words
#       regex: ["AKIA[0-9A-Z]{16}"]                     # Python syntax, as written
#       action: block                                   # block | flag (report, let through)
#       apply_to: {teams: [design], keys: [key_123]}    # or: apply_to: default (everyone)
#       provider: true                                  # also ask the provider hook
#   provider_model: omni-moderation-latest  # a model group of kind `moderations`
#   on_provider_error: allow                # allow | block, when the provider check fails
#
# A key opts into more policies with `settings: {"moderation": ["no-secrets"]}`.

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faregate.config import ConfigError
from faregate.errors import FaregateError
from faregate.policy.errors import ContentBlocked
from faregate.policy.subject import Subject

log = logging.getLogger("faregate.moderation")


class ModerationProvider(Protocol):
    async def flagged(self, texts: Sequence[str]) -> bool: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    blocked: bool
    policy_id: str | None = None
    matched: str | None = None  # the keyword or pattern that matched, or "provider"

    def raise_if_blocked(self) -> None:
        if self.blocked:
            raise ContentBlocked(
                f"This request was blocked by content policy '{self.policy_id}'.",
            )


ALLOWED = Verdict(False)


def _keyword_pattern(keyword: str) -> str:
    words = [re.escape(w) for w in keyword.split()]
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


class ModerationPolicy:
    def __init__(
        self,
        id: str,
        *,
        keywords: Sequence[str] = (),
        regex: Sequence[str] = (),
        action: str = "block",
        teams: Sequence[str] = (),
        keys: Sequence[str] = (),
        default: bool = False,
        provider: bool = False,
    ) -> None:
        if action not in ("block", "flag"):
            raise ConfigError(f"moderation policy {id!r}: action must be block or flag")
        self.id = id
        self.action = action
        self.teams = frozenset(teams)
        self.keys = frozenset(keys)
        self.default = default
        self.provider = provider
        words = [k for k in keywords if k.strip()]
        self._keywords = [(k, re.compile(_keyword_pattern(k), re.IGNORECASE)) for k in words]
        try:
            self._patterns = [(r, re.compile(r)) for r in regex]
        except re.error as exc:
            raise ConfigError(f"moderation policy {id!r}: bad regex: {exc}") from None

    def applies_to(self, subject: Subject, also: Collection[str] = ()) -> bool:
        """`also`: policy ids the key itself opted into (its `moderation` setting)."""
        return (
            self.default
            or (subject.team_id is not None and subject.team_id in self.teams)
            or (subject.key_id is not None and subject.key_id in self.keys)
            or self.id in also
        )

    def first_match(self, texts: Sequence[str]) -> str | None:
        for rule, pattern in [*self._keywords, *self._patterns]:
            if any(pattern.search(text) for text in texts):
                return rule
        return None


class Moderator:
    def __init__(
        self,
        policies: Sequence[ModerationPolicy],
        provider: ModerationProvider | None = None,
        *,
        block_on_provider_error: bool = False,
    ) -> None:
        wanting = [p.id for p in policies if p.provider]
        if wanting and provider is None:
            raise ConfigError(f"moderation policies {wanting} need a moderation provider")
        self.policies = tuple(policies)
        self._provider = provider
        self._block_on_error = block_on_provider_error

    def applicable(self, subject: Subject, also: Collection[str] = ()) -> list[ModerationPolicy]:
        return [p for p in self.policies if p.applies_to(subject, also)]

    def check(self, subject: Subject, texts: Sequence[str], also: Collection[str] = ()) -> Verdict:
        """Local rules only. A block wins over a flag; otherwise the first flag is reported."""
        return self._local(self.applicable(subject, also), texts)

    @staticmethod
    def _local(policies: Sequence[ModerationPolicy], texts: Sequence[str]) -> Verdict:
        flagged = ALLOWED
        for policy in policies:
            matched = policy.first_match(texts)
            if matched is None:
                continue
            if policy.action == "block":
                return Verdict(True, policy.id, matched)
            if flagged is ALLOWED:
                flagged = Verdict(False, policy.id, matched)
        return flagged

    async def check_async(
        self, subject: Subject, texts: Sequence[str], also: Collection[str] = ()
    ) -> Verdict:
        """Local rules first; then, if an applicable policy asks for it, the provider."""
        return await self.check_policies(self.applicable(subject, also), texts)

    async def check_policies(
        self, policies: Sequence[ModerationPolicy], texts: Sequence[str]
    ) -> Verdict:
        verdict = self._local(policies, texts)
        if verdict.blocked or self._provider is None or not texts:
            return verdict
        asking = [p for p in policies if p.provider]
        if not asking:
            return verdict
        try:
            flagged = await self._provider.flagged(texts)
        except FaregateError:
            log.warning("moderation provider failed", extra={"policies": [p.id for p in asking]})
            flagged = self._block_on_error
        if flagged:
            policy = next((p for p in asking if p.action == "block"), asking[0])
            return Verdict(policy.action == "block", policy.id, "provider")
        return verdict


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of strings")
    return value


def _policy(spec: Mapping[str, Any]) -> ModerationPolicy:
    if not isinstance(spec, Mapping) or not spec.get("id"):
        raise ConfigError("every moderation policy needs an id")
    pid = str(spec["id"])
    target = spec.get("apply_to", "default")
    if target != "default" and not isinstance(target, Mapping):
        raise ConfigError(f"moderation policy {pid!r}: apply_to must be 'default' or a mapping")
    scoped = target if isinstance(target, Mapping) else {}
    return ModerationPolicy(
        pid,
        keywords=_names(spec.get("keywords"), f"moderation policy {pid!r} keywords"),
        regex=_names(spec.get("regex"), f"moderation policy {pid!r} regex"),
        action=str(spec.get("action", "block")),
        teams=_names(scoped.get("teams"), f"moderation policy {pid!r} teams"),
        keys=_names(scoped.get("keys"), f"moderation policy {pid!r} keys"),
        default=target == "default" or bool(scoped.get("default")),
        provider=bool(spec.get("provider", False)),
    )


def provider_options(section: Mapping[str, Any] | None) -> tuple[str | None, bool]:
    """`moderation.provider_model` and whether a failed provider check blocks."""
    s = section or {}
    on_error = s.get("on_provider_error", "allow")
    if on_error not in ("allow", "block"):
        raise ConfigError("moderation.on_provider_error must be allow or block")
    model = s.get("provider_model")
    return (str(model) if model else None), on_error == "block"


def parse_moderation(section: Mapping[str, Any] | None) -> list[ModerationPolicy]:
    policies = [_policy(spec) for spec in (section or {}).get("policies") or []]
    ids = [p.id for p in policies]
    if len(set(ids)) != len(ids):
        raise ConfigError("moderation policy ids must be unique")
    return policies
