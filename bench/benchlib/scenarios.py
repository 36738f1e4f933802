"""The benchmark's cells: which mock deployment, streaming or not, and how many connections."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

PROMPT = "Write one short sentence about benchmarks."
MAX_TOKENS = 64


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    deployment: str  # a deployment of bench/configs/mock.yaml
    stream: bool
    connections: int
    # Every request the same and greedy (temperature 0): after the first, a gateway with a
    # response cache answers from it, without the upstream.
    cached: bool = False
    # The gateways' model has two deployments, the first one's provider down (the mock's
    # `down` answers every request 500 or 503): each gateway fails over as configured.
    # direct and the pass-through, which cannot, go to `deployment` (`fast`): the cost of
    # a request that reaches a healthy provider at once.
    failover: bool = False

    @property
    def model_name(self) -> str:
        """The model name the gateways' configurations give this cell (`bench-...`)."""
        return "bench-failover" if self.failover else f"bench-{self.deployment}"

    @property
    def same_core(self) -> bool:
        """At concurrency 1 everything shares one core: waking an idle vCPU costs more
        than the work measured."""
        return self.connections == 1

    def body(self, model: str, extra: dict[str, object] | None = None) -> str:
        """The request body; `extra`, fields a target needs beside the common ones."""
        data: dict[str, object] = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": MAX_TOKENS,
        }
        if self.stream:
            data["stream"] = True
            data["stream_options"] = {"include_usage": True}
        if self.cached:
            data["temperature"] = 0
        if extra:
            data.update(extra)
        return orjson.dumps(data).decode()


SCENARIOS = [
    Scenario("chat-c1", "chat, 0 ms upstream, c=1", "fast", False, 1),
    Scenario("chat-c32", "chat, 0 ms upstream, c=32", "fast", False, 32),
    Scenario("stream-c1", "stream (20 chunks), 0 ms upstream, c=1", "fast", True, 1),
    Scenario("stream-c32", "stream (20 chunks), 0 ms upstream, c=32", "fast", True, 32),
    Scenario("chat50-c32", "chat, 50 ms upstream, c=32", "slow50", False, 32),
    Scenario("chat50-c128", "chat, 50 ms upstream, c=128", "slow50", False, 128),
    Scenario("paced-c128", "paced stream (50 ms + 22 x 5 ms), c=128", "paced", True, 128),
    Scenario("cached-c32", "chat, cache hits, c=32", "fast", False, 32, cached=True),
    Scenario("failover-c32", "chat, first provider down, c=32", "fast", False, 32, failover=True),
]

BY_KEY = {s.key: s for s in SCENARIOS}
