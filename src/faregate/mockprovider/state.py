"""The one mutable object of a mock server: its config, counters, fault dice and shutdown
signal. Built by `build_mock_app` and stored on the application; never module-level.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from faregate.mockprovider.config import MockConfig
from faregate.mockprovider.faults import FaultDice
from faregate.mockprovider.stats import MockStats


@dataclass(slots=True)
class MockState:
    config: MockConfig
    stats: MockStats = field(default_factory=MockStats)
    dice: FaultDice = field(init=False)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # Digests of the Anthropic prompts written to the emulated prompt cache.
    prompt_cache: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.dice = FaultDice(self.config.seed)

    def reset(self) -> None:
        """Zero the counters, restart every deployment's fault sequence, empty the cache."""
        self.stats.reset()
        self.dice.reset(self.config.seed)
        self.prompt_cache.clear()


STATE: web.AppKey[MockState] = web.AppKey("mock_state", MockState)
