"""When the cache is read and written, from config, headers and the key's own settings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from faregate.cache import CacheDecision, CachePolicy, hit_price
from faregate.config import ConfigError
from faregate.errors import InvalidRequest

ON = CachePolicy.from_config({"enabled": True, "default_ttl": 600})
GREEDY: dict[str, Any] = {"model": "m", "messages": [], "temperature": 0}
SAMPLED: dict[str, Any] = {"model": "m", "messages": []}  # temperature defaults to 1


def test_deterministic_requests_are_cached_with_the_default_ttl() -> None:
    assert ON.decide("chat", GREEDY, {}) == CacheDecision(True, True, 600)
    assert ON.decide("embeddings", {"input": "x"}, {}).lookup


def test_sampled_requests_need_an_opt_in() -> None:
    assert not ON.decide("chat", SAMPLED, {}).lookup
    assert not ON.decide("chat", GREEDY | {"temperature": 0.7}, {}).store
    assert ON.decide("chat", SAMPLED, {}, key_nonzero_temperature=True).lookup
    allowed = CachePolicy.from_config({"enabled": True, "allow_nonzero_temperature": True})
    assert allowed.decide("chat", SAMPLED, {}).lookup
    assert not allowed.decide("chat", SAMPLED, {}, key_nonzero_temperature=False).lookup


def test_image_generations_are_cached_unless_turned_off() -> None:
    cat = {"model": "dall-e-3", "prompt": "cat"}
    assert ON.decide("images", cat, {}) == CacheDecision(True, True, 600)
    assert ON.decide("images", cat | {"temperature": 0.9}, {}).store  # no sampling opt-in
    off = CachePolicy.from_config({"enabled": True, "images": False})
    assert not off.decide("images", cat, {}).lookup
    assert off.decide("images", cat, {}, key_images=True).lookup
    assert not ON.decide("images", cat, {}, key_images=False).store
    assert not ON.decide("images", cat, {"Cache-Control": "no-store"}).store


def test_cache_control_headers_skip_the_lookup_or_everything() -> None:
    refresh = ON.decide("chat", GREEDY, {"Cache-Control": "no-cache"})
    assert (refresh.lookup, refresh.store) == (False, True)
    assert ON.decide("chat", GREEDY, {"cache-control": "max-age=0, No-Store"}) == CacheDecision(
        False, False, 0
    )


def test_the_ttl_header_sets_caps_or_disables_storing() -> None:
    assert ON.decide("chat", GREEDY, {"x-faregate-cache-ttl": "30"}).ttl_s == 30
    assert ON.decide("chat", GREEDY, {"X-Faregate-Cache-Ttl": "99999999"}).ttl_s == 7 * 86400
    zero = ON.decide("chat", GREEDY, {"x-faregate-cache-ttl": "0"})
    assert (zero.lookup, zero.store) == (True, False)
    with pytest.raises(InvalidRequest):
        ON.decide("chat", GREEDY, {"x-faregate-cache-ttl": "soon"})


def test_keys_opt_out_and_opt_in() -> None:
    assert not ON.decide("chat", GREEDY, {}, key_cache=False).lookup
    opt_in = CachePolicy.from_config({"enabled": True, "opt_in": True})
    assert not opt_in.decide("chat", GREEDY, {}).lookup
    assert opt_in.decide("chat", GREEDY, {}, key_cache=True).lookup
    assert not CachePolicy().decide("chat", GREEDY, {}, key_cache=True).lookup
    assert not opt_in.decide("chat", GREEDY, {}, key_cache=False).lookup
    assert ON.should_lookup("chat", GREEDY, {}) and ON.should_store("chat", GREEDY, {})


def test_a_request_opts_itself_in_or_out_with_the_cache_header() -> None:
    opt_in = CachePolicy.from_config({"enabled": True, "opt_in": True, "default_ttl": 600})
    assert opt_in.decide("chat", GREEDY, {"X-Faregate-Cache": "on"}) == CacheDecision(
        True, True, 600
    )
    assert not opt_in.decide("chat", SAMPLED, {"x-faregate-cache": "on"}).lookup
    assert not opt_in.decide("chat", GREEDY, {"x-faregate-cache": "on"}, key_cache=False).lookup
    assert ON.decide("chat", GREEDY, {"x-faregate-cache": "OFF"}) == CacheDecision(False, False, 0)
    with pytest.raises(InvalidRequest) as bad:
        ON.decide("chat", GREEDY, {"x-faregate-cache": "maybe"})
    assert bad.value.param == "x-faregate-cache"


def test_hits_are_free_or_pay_a_share() -> None:
    assert hit_price(Decimal("0.40"), ON) == 0
    share = CachePolicy.from_config({"enabled": True, "hit_billing": "share", "share": 0.1})
    assert hit_price(Decimal("0.40"), share) == Decimal("0.04")


@pytest.mark.parametrize(
    "section",
    [
        {"hit_billing": "double"},
        {"share": 2},
        {"share": "x"},
        {"default_ttl": 0},
        {"max_entries": "many"},
    ],
)
def test_bad_cache_settings_are_config_errors(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CachePolicy.from_config(section)
