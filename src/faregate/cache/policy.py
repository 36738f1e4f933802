"""When a response may be served from or written to the cache, and for how long: the
`cache:` config section, per-request headers and per-key opt-ins. Pure decisions."""

# Configuration:
#
# cache:
#   enabled: true
#   default_ttl: 3600                 # seconds
#   max_ttl: 604800                   # cap for x-faregate-cache-ttl
#   max_entries: 10000                # in-process backend only
#   max_bytes: 268435456              # in-process backend only
#   allow_nonzero_temperature: false  # sampled answers are cached only on opt-in
#   images: true                      # image generations are cached like greedy answers
#   opt_in: false                     # true: only keys with `cache: true` or requests with
#                                     # `x-faregate-cache: on` use the cache
#   hit_billing: free                 # free | share
#   share: 0.1                        # with share: a hit costs this part of the price

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from faregate.cache.keys import KINDS
from faregate.config import ConfigError
from faregate.errors import InvalidRequest
from faregate.money import parse_decimal

TTL_HEADER = "x-faregate-cache-ttl"
SWITCH_HEADER = "x-faregate-cache"  # on: this request opts in; off: it neither reads nor writes
DETERMINISTIC_KINDS = frozenset({"embeddings"})
# The same prompt draws a new image every time, but the image it drew once answers that prompt
# as well as the next draw would, at no cost: images follow their own switch, not temperature.
IMAGE_KINDS = frozenset({"images"})


@dataclass(frozen=True, slots=True)
class CacheDecision:
    lookup: bool
    store: bool
    ttl_s: int


NO_CACHE = CacheDecision(False, False, 0)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _directives(headers: Mapping[str, str]) -> set[str]:
    value = _header(headers, "cache-control") or ""
    return {d.strip().lower() for d in value.split(",") if d.strip()}


def _switch(headers: Mapping[str, str]) -> bool | None:
    """The request's own `x-faregate-cache: on|off`; None when absent."""
    raw = _header(headers, SWITCH_HEADER)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in ("on", "off"):
        raise InvalidRequest(f"{SWITCH_HEADER} must be on or off", param=SWITCH_HEADER)
    return value == "on"


def sampled(kind: str, body: Mapping[str, Any]) -> bool:
    """Whether the answer is drawn at random: temperature absent means 1 for OpenAI."""
    if kind in DETERMINISTIC_KINDS or kind in IMAGE_KINDS:
        return False
    temperature = body.get("temperature", 1)
    return not isinstance(temperature, int | float) or temperature != 0


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool = False
    default_ttl: int = 3600
    max_ttl: int = 7 * 86400
    max_entries: int = 10_000
    max_bytes: int = 256 * 2**20
    allow_nonzero_temperature: bool = False
    images: bool = True
    opt_in: bool = False
    hit_billing: str = "free"
    share: Decimal = Decimal("0.1")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> CachePolicy:
        s = section or {}
        billing = str(s.get("hit_billing", "free"))
        if billing not in ("free", "share"):
            raise ConfigError("cache.hit_billing must be free or share")
        try:
            share = parse_decimal(s.get("share", "0.1"))
        except (ValueError, InvalidOperation):
            raise ConfigError("cache.share must be a number") from None
        if not 0 <= share <= 1:
            raise ConfigError("cache.share must be between 0 and 1")
        try:
            policy = cls(
                enabled=bool(s.get("enabled", False)),
                default_ttl=int(s.get("default_ttl", 3600)),
                max_ttl=int(s.get("max_ttl", 7 * 86400)),
                max_entries=int(s.get("max_entries", 10_000)),
                max_bytes=int(s.get("max_bytes", 256 * 2**20)),
                allow_nonzero_temperature=bool(s.get("allow_nonzero_temperature", False)),
                images=bool(s.get("images", True)),
                opt_in=bool(s.get("opt_in", False)),
                hit_billing=billing,
                share=share,
            )
        except (TypeError, ValueError):
            raise ConfigError("cache ttl and size settings must be integers") from None
        if min(policy.default_ttl, policy.max_ttl, policy.max_entries, policy.max_bytes) <= 0:
            raise ConfigError("cache ttl and size settings must be positive")
        return policy

    def ttl(self, headers: Mapping[str, str]) -> int:
        """Seconds to keep a stored answer: x-faregate-cache-ttl, capped, else the default."""
        raw = _header(headers, TTL_HEADER)
        if raw is None:
            return min(self.default_ttl, self.max_ttl)
        try:
            value = int(raw.strip())
        except ValueError:
            raise InvalidRequest(
                f"{TTL_HEADER} must be a whole number of seconds", param=TTL_HEADER
            ) from None
        return max(0, min(value, self.max_ttl))

    def decide(
        self,
        kind: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        *,
        key_cache: bool | None = None,
        key_nonzero_temperature: bool | None = None,
        key_images: bool | None = None,
    ) -> CacheDecision:
        """`key_*` are the key's own settings (None: unset, the config decides). A key with
        `cache: false` never uses the cache; with `opt_in`, a key with `cache: true` or a
        request with `x-faregate-cache: on` does. `x-faregate-cache: off` and
        `Cache-Control: no-store` neither read nor write; `no-cache` skips the lookup but
        refreshes the entry."""
        if not self.enabled or kind not in KINDS or key_cache is False:
            return NO_CACHE
        switch = _switch(headers)
        if switch is False:
            return NO_CACHE
        if self.opt_in and key_cache is not True and switch is not True:
            return NO_CACHE
        if not self._kind_allowed(kind, body, key_nonzero_temperature, key_images):
            return NO_CACHE
        directives = _directives(headers)
        if "no-store" in directives:
            return NO_CACHE
        ttl = self.ttl(headers)
        return CacheDecision("no-cache" not in directives, ttl > 0, ttl)

    def _kind_allowed(
        self,
        kind: str,
        body: Mapping[str, Any],
        key_nonzero_temperature: bool | None,
        key_images: bool | None,
    ) -> bool:
        if kind in IMAGE_KINDS:
            return self.images if key_images is None else key_images
        if sampled(kind, body):
            allowed = key_nonzero_temperature
            return self.allow_nonzero_temperature if allowed is None else allowed
        return True

    def should_lookup(
        self, kind: str, body: Mapping[str, Any], headers: Mapping[str, str], **key: bool | None
    ) -> bool:
        return self.decide(kind, body, headers, **key).lookup

    def should_store(
        self, kind: str, body: Mapping[str, Any], headers: Mapping[str, str], **key: bool | None
    ) -> bool:
        return self.decide(kind, body, headers, **key).store
