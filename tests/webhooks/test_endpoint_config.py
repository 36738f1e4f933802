"""Lago's limit of ten webhook endpoints per organization (422 `base: exceeded_limit`), and
the configuration file's endpoints checked at start-up: one per URL, only webhook types that
exist (a typo used to leave an endpoint that never received anything)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from faregate.api.webhooks import ENDPOINT_LIMIT
from faregate.app import start_app
from faregate.config import ConfigError, load_settings
from faregate.webhooks import WebhookSettings
from tests.conftest import migrated
from tests.webhooks import test_endpoint_rules, test_webhooks
from tests.webhooks.test_endpoint_rules import _endpoint, _refusal, _refused

db_url = test_webhooks.db_url
server = test_webhooks.server


def _url(i: int) -> str:
    return f"https://hooks.example.com/{i}"


async def test_an_eleventh_endpoint_is_refused_as_lago_refuses_it(server: Any) -> None:
    assert ENDPOINT_LIMIT == 10  # Lago's WebhookEndpoint::LIMIT
    endpoints = test_endpoint_rules._client(server).webhook_endpoints
    created = [await asyncio.to_thread(endpoints.create, _endpoint(_url(i))) for i in range(10)]
    refused = await _refusal(endpoints.create, _endpoint(_url(10)))
    assert refused == _refused({"base": ["exceeded_limit"]})
    # Updating one is no create; deleting one makes room for another.
    await asyncio.to_thread(endpoints.update, _endpoint(_url(11)), created[0].lago_id)
    await asyncio.to_thread(endpoints.destroy, created[1].lago_id)
    await asyncio.to_thread(endpoints.create, _endpoint(_url(12)))
    listed = await asyncio.to_thread(endpoints.find_all)
    assert len(listed["webhook_endpoints"]) == 10


async def test_racing_creates_do_not_pass_the_limit(server: Any) -> None:
    endpoints = test_endpoint_rules._client(server).webhook_endpoints
    for i in range(8):
        await asyncio.to_thread(endpoints.create, _endpoint(_url(i)))

    async def create(i: int) -> bool:
        try:
            await asyncio.to_thread(endpoints.create, _endpoint(_url(i)))
        except Exception:
            return False
        return True

    made = await asyncio.gather(*(create(i) for i in range(8, 14)))
    assert made.count(True) == 2
    assert len((await asyncio.to_thread(endpoints.find_all))["webhook_endpoints"]) == 10


def _settings(endpoints: list[Any]) -> WebhookSettings:
    return WebhookSettings.from_settings(
        load_settings(env={}, overrides={"webhooks": {"endpoints": endpoints}})
    )


def test_configured_endpoints_are_read_as_the_api_reads_them() -> None:
    first, second, third = _settings(
        [
            {"url": _url(1), "event_types": [" Invoice.Created ", "invoice.finalized", ""]},
            {"url": _url(2), "event_types": ["*"]},
            _url(3),
        ]
    ).endpoints
    assert first.event_types == frozenset({"invoice.created", "invoice.finalized"})
    assert second.event_types is None and third.event_types is None


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        (
            [_url(1), {"url": _url(1), "event_types": ["invoice.created"]}],
            f"webhooks.endpoints[1]: {_url(1)} is already webhooks.endpoints[0]",
        ),
        (
            [{"url": _url(1), "event_types": ["invoice.created", "invoice.craeted"]}],
            "webhooks.endpoints[0].event_types: unknown webhook type(s) invoice.craeted",
        ),
        (
            [{"url": _url(1), "event_types": "invoice.created"}],
            "webhooks.endpoints[0].event_types must be a list",
        ),
    ],
)
def test_a_configured_endpoint_mistake_is_a_config_error(
    endpoints: list[Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _settings(endpoints)
    assert message in str(raised.value)


async def test_a_server_with_a_mistaken_endpoint_does_not_start(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    await migrated(url)
    settings = load_settings(
        env={
            "FAREGATE_DATABASE_URL": url,
            "FAREGATE_DATA_DIR": str(tmp_path),
        },
        overrides={"webhooks": {"endpoints": [_url(1), _url(1)]}},
    )
    with pytest.raises(ConfigError, match=r"is already webhooks\.endpoints\[0\]"):
        runner = await start_app(settings)
        await runner.cleanup()
