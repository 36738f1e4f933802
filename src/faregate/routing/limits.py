"""Per-deployment request and token rates (`rpm`, `tpm` on a deployment), as LiteLLM users
know them: failover skips a deployment at its limit like one cooling down. Counted with the
GCRA of the key rate limits in the counter store, so replicas sharing Redis share one rate
per deployment. Knows nothing of HTTP; the store is handed in."""

from __future__ import annotations

from faregate.config import Deployment
from faregate.errors import RateLimited
from faregate.store.counters.base import CounterStore, LimitSpec

WINDOW_S = 60
KEY_PREFIX = "deployment-rate:"


class DeploymentLimitReached(RateLimited):
    """Every deployment the request could use is at its rpm / tpm limit."""

    code = "deployment_rate_limited"

    def __init__(self, group: str, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(
            f"Every deployment of {group!r} is at its requests or tokens per minute limit; "
            f"retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after = retry_after


class DeploymentLimits:
    """Admits one call to a deployment against its `rpm` and `tpm`, or says how long until
    it would fit. A call is counted when admitted, before it is sent: a refused or failed
    upstream call still used its slot, as it did at the provider."""

    def __init__(self, store: CounterStore, window_s: float = WINDOW_S) -> None:
        self._store = store
        self._window_s = window_s

    async def admit(self, deployment: Deployment, tokens: int) -> float:
        """0.0 when admitted (and counted), else seconds until this call would fit.

        `tokens` is the call's estimate (prompt + expected output). A call larger than the
        whole `tpm` is counted as `tpm`, so it still goes once the minute is clear."""
        specs = []
        if deployment.rpm is not None:
            key = f"{KEY_PREFIX}{deployment.id}:req"
            specs.append(LimitSpec(key, deployment.rpm, self._window_s, 1))
        if deployment.tpm is not None:
            cost = min(max(tokens, 0), deployment.tpm)
            key = f"{KEY_PREFIX}{deployment.id}:tok"
            specs.append(LimitSpec(key, deployment.tpm, self._window_s, cost))
        if not specs:
            return 0.0
        admission = await self._store.admit(specs)
        if admission.allowed:
            return 0.0
        return max(r.retry_after_s for r in admission.rates if not r.allowed)
