"""Counts of the requests that reached the mock, by deployment, route and model.

Tests use it to prove what did or did not reach the provider. Routes are named by their
path template, e.g. "/v1/chat/completions" or "/v1beta/models/{model}:generateContent".
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class MockStats:
    """Request counters. `requests` is the total; the `by_*` views are computed on access."""

    def __init__(self) -> None:
        self.requests = 0
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def record(self, deployment: str, route: str, model: str) -> None:
        self.requests += 1
        self._counts[deployment, route, model] += 1

    def reset(self) -> None:
        self.requests = 0
        self._counts.clear()

    @property
    def by_deployment(self) -> dict[str, int]:
        return self._view(0)

    @property
    def by_route(self) -> dict[str, int]:
        return self._view(1)

    @property
    def by_model(self) -> dict[str, int]:
        return self._view(2)

    def requests_for(
        self, deployment: str | None = None, route: str | None = None, model: str | None = None
    ) -> int:
        """Requests matching every filter given; no filter counts everything."""
        return sum(
            n
            for (d, r, m), n in self._counts.items()
            if (deployment is None or d == deployment)
            and (route is None or r == route)
            and (model is None or m == model)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_route": self.by_route,
            "by_deployment": self.by_deployment,
            "by_model": self.by_model,
        }

    def _view(self, position: int) -> dict[str, int]:
        view: Counter[str] = Counter()
        for key, n in self._counts.items():
            view[key[position]] += n
        return dict(view)
