"""Settings in seconds: how old a process's copy of a subscription's plan
(`billing.plan_check_s`) and of a customer's wallets (`wallets.cache_s`) may be, and the
intervals and lifetimes beside them, read from the configuration, checked, and handed to
the parts that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faregate.config import ConfigError, load_settings
from faregate.gateway.plan_pricing import CHECK_S, PlanPriceStage
from faregate.mockprovider.server import MockServer
from faregate.wallets.assembly import hold_ttl
from faregate.wallets.runtime import CACHE_S
from tests.gateway.conftest import start_gateway


def _seconds(section: str, key: str, value: Any) -> float:
    settings = load_settings(env={}, overrides={section: {key: value}})
    return settings.seconds(section, key, 1.0)


@pytest.mark.parametrize(
    ("value", "seconds"), [(30, 30.0), (0.5, 0.5), ("2.5", 2.5)], ids=["int", "float", "text"]
)
def test_a_number_of_seconds_is_read_as_given(value: Any, seconds: float) -> None:
    assert _seconds("billing", "plan_check_s", value) == seconds


def test_an_unset_number_of_seconds_is_the_default() -> None:
    settings = load_settings(env={}, overrides={})
    assert settings.seconds("billing", "plan_check_s", CHECK_S) == CHECK_S
    assert settings.seconds("wallets", "cache_s", CACHE_S) == CACHE_S


@pytest.mark.parametrize("value", [0, -1, True, "soon", None, [1], float("inf"), float("nan")])
def test_anything_but_a_positive_number_of_seconds_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"wallets\.cache_s must be a positive number"):
        _seconds("wallets", "cache_s", value)


async def test_the_configured_ages_reach_the_plan_prices_and_the_wallets(
    tmp_path: Path, mock: MockServer
) -> None:
    extra = {"billing": {"plan_check_s": 30}, "wallets": {"cache_s": 12}}
    running = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}", mock, extra
    )
    try:
        services = running.services
        [stage] = [s for s in services.gateway.stages if isinstance(s, PlanPriceStage)]
        assert stage._prices._check_s == 30.0 and stage._prices._refresh_s == 15.0
        assert services.wallets.cache_s == 12.0
    finally:
        await running.runner.cleanup()


@pytest.mark.parametrize("value", [0, -60])
def test_a_hold_lifetime_that_is_not_a_positive_number_of_seconds_is_refused(value: int) -> None:
    """The wallets' `hold_ttl_s` goes through the same check as every interval in seconds
    (`metering.flush_interval`, `wallets.journal_flush_s`, `wallets.sweep_interval_s`,
    `server.hold_sweep_interval_s`); unset, it is the request timeout and a minute."""
    with pytest.raises(ConfigError, match=r"wallets\.hold_ttl_s must be a positive number"):
        hold_ttl(load_settings(env={}, overrides={"wallets": {"hold_ttl_s": value}}))
    settings = load_settings(env={}, overrides={})
    assert hold_ttl(settings) == settings.request_timeout + 60
