"""How the mock provider behaves: delays, reply length and fault rates, per deployment.

Plain dataclasses with a YAML-friendly `from_dict`; no I/O and no aiohttp here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

DEFAULT_DEPLOYMENT = "default"

_RATES = ("error_rate", "rate_limit_rate", "malformed_rate", "bad_request_rate")
_DELAYS = ("ttft", "chunk_delay", "latency", "retry_after")


@dataclass(slots=True)
class MockBehaviour:
    """One deployment's behaviour.

    Rates are shares of requests in [0, 1] and together at most 1. `bad_request_rate`
    answers 400 (a non-retryable refusal); `retry_after_ms: false` leaves `retry-after-ms`
    out of a 429, so only the `Retry-After` header (whole seconds) says how long to wait.
    `context_window` makes chat refuse longer prompts with each provider's context-window
    error (OpenAI's `context_length_exceeded`). A non-streaming reply
    waits `latency` when set, else `ttft + chunk_delay * output tokens` (when a stream of
    the same reply would have finished).
    """

    ttft: float = 0.0
    chunk_delay: float = 0.0
    latency: float = 0.0
    output_tokens: int = 20
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    retry_after_ms: bool = True
    bad_request_rate: float = 0.0
    hang: bool = False
    disconnect_after_chunks: int | None = None
    malformed_rate: float = 0.0
    require_key: str | None = None
    context_window: int | None = None

    def __post_init__(self) -> None:
        for name in _RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if sum(getattr(self, name) for name in _RATES) > 1.0 + 1e-9:
            raise ValueError(f"{' + '.join(_RATES)} must be at most 1")
        for name in _DELAYS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.context_window is not None and self.context_window < 1:
            raise ValueError("context_window must be at least 1")
        if self.output_tokens < 1:
            raise ValueError("output_tokens must be at least 1")
        if self.disconnect_after_chunks is not None and self.disconnect_after_chunks < 0:
            raise ValueError("disconnect_after_chunks must not be negative")

    @property
    def fault_free(self) -> bool:
        return not any(getattr(self, name) for name in _RATES)

    def full_reply_delay(self, chunks: int) -> float:
        """Seconds a non-streaming reply of `chunks` output tokens waits before answering."""
        if self.latency > 0:
            return self.latency
        return self.ttft + self.chunk_delay * chunks

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: MockBehaviour | None = None) -> MockBehaviour:
        """Build from a mapping; fields it leaves out come from `base` (else the defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown mock behaviour fields: {sorted(unknown)}")
        values = {k: _coerce(k, v) for k, v in data.items()}
        return replace(base, **values) if base is not None else cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _coerce(name: str, value: Any) -> Any:
    if name in ("output_tokens", "disconnect_after_chunks", "context_window"):
        if value is None and name != "output_tokens":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        return value
    if name in ("hang", "retry_after_ms"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name == "require_key":
        if value is not None and not isinstance(value, str):
            raise ValueError("require_key must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


@dataclass(slots=True)
class MockConfig:
    """The default behaviour, named deployments (served under `/d/{name}`) and the RNG seed."""

    default: MockBehaviour = field(default_factory=MockBehaviour)
    deployments: dict[str, MockBehaviour] = field(default_factory=dict)
    seed: int = 0

    def behaviour_for(self, deployment: str) -> MockBehaviour:
        return self.deployments.get(deployment, self.default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MockConfig:
        """Parse `{default: {...}, deployments: {name: {...}}, seed: 0}`.

        Each deployment inherits every field it does not set from `default`.
        """
        data = data or {}
        unknown = set(data) - {"default", "deployments", "seed"}
        if unknown:
            raise ValueError(f"unknown mock config keys: {sorted(unknown)}")
        default = MockBehaviour.from_dict(data.get("default") or {})
        deployments = {
            str(name): MockBehaviour.from_dict(spec or {}, base=default)
            for name, spec in (data.get("deployments") or {}).items()
        }
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed must be an integer")
        return cls(default=default, deployments=deployments, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default.to_dict(),
            "deployments": {k: v.to_dict() for k, v in self.deployments.items()},
            "seed": self.seed,
        }
