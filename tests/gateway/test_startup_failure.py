"""A configuration mistake that start-up finds only after it has opened things (the
database engine, the upstream session, the usage writer, the gateway's counters and
background tasks) stops the server with that ConfigError and closes what was opened."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from faregate.config import ConfigError
from faregate.mockprovider.server import MockServer

from .conftest import start_gateway


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # Read by the server after its engine, session and upstreams are open.
        ({"metering": {"flush_interval": -1}}, "metering.flush_interval"),
        # Read while the gateway is assembled, after its counters and health tasks started.
        ({"routing": {"breaker": {"half_opens": 1}}}, "routing.breaker"),
        # Read late in the assembly, after the hold sweeper, alerts and wallets.
        ({"billing": {"plan_check_s": 0}}, "billing.plan_check_s"),
    ],
)
async def test_a_mistake_found_late_in_start_up_closes_what_was_opened(
    tmp_path: Path,
    mock: MockServer,
    opened_sessions: list[aiohttp.ClientSession],
    extra: dict[str, Any],
    message: str,
) -> None:
    before = asyncio.all_tasks()
    url = f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"
    with pytest.raises(ConfigError, match=message):
        await start_gateway(tmp_path, url, mock, extra)
    assert opened_sessions and all(session.closed for session in opened_sessions)
    await asyncio.sleep(0)
    left = [t.get_name() for t in asyncio.all_tasks() - before if not t.done()]
    assert not left  # the writers, the webhooks, the hold sweeper: stopped
