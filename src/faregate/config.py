"""Settings from environment variables and a YAML file. The only module that reads the
environment. Feature packages parse their own section with `Settings.section(name)`, so a
new capability adds a YAML section without touching this file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faregate.errors import FaregateError


class ConfigError(FaregateError):
    status = 500
    code = "config_error"


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    wire: str  # adapter: openai | anthropic | gemini
    base_url: str
    api_key: str | None = None  # resolved from api_key_env; never logged
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 600.0
    connect_timeout: float = 10.0
    # Connections open at once to this provider's host (None: the transport's default).
    max_connections: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __repr__(self) -> str:  # keep the key out of any repr that reaches a log
        return (
            f"ProviderSettings(name={self.name!r}, wire={self.wire!r}, base_url={self.base_url!r})"
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """One way to serve a public model: a provider, its model id and routing attributes."""

    id: str
    group: str
    provider: str
    model: str
    wire: str = "openai"
    region: str | None = None
    tier: str | None = None
    weight: float = 1.0
    priority: int = 0
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    # Catalog key used for provider cost; defaults to `model`.
    price_key: str | None = None
    timeout: float | None = None
    # Requests / tokens per minute this deployment may take (shared across replicas).
    rpm: int | None = None
    tpm: int | None = None

    @property
    def catalog_model(self) -> str:
        return self.price_key or self.model


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """A public model name and the deployments behind it."""

    name: str
    deployments: tuple[Deployment, ...]
    kind: str = "chat"  # chat | embeddings | images | moderation
    strategy: str = "priority"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    context_window_fallbacks: tuple[str, ...] = ()
    owned_by: str = "faregate"


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite+aiosqlite:///faregate.db"
    redis_url: str | None = None
    admin_key: str | None = None
    secret_key: str | None = None  # encrypts provider credentials stored in the database
    max_body_bytes: int = 20 * 1024 * 1024
    request_timeout: float = 600.0
    currency: str = "USD"
    data_dir: str = "."
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    models: dict[str, ModelGroup] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"config section {name!r} must be a mapping")
        return value

    def seconds(self, section: str, key: str, default: float) -> float:
        """`section.key`: a positive, finite number of seconds (a number or its text, as a
        `${VAR}` gives it), else `default` when it is not set."""
        value = self.section(section).get(key, default)
        try:
            seconds = -1.0 if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise ConfigError(f"{section}.{key} must be a positive number of seconds")
        return seconds

    def __repr__(self) -> str:
        return f"Settings(host={self.host!r}, port={self.port}, providers={list(self.providers)})"


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string of the YAML tree."""
    if isinstance(value, str) and "${" in value:

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"config refers to ${{{name}}}, which is not set")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    return value


def _pairs(value: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    return tuple((value or {}).items())


def _parse_provider(name: str, spec: Mapping[str, Any], env: Mapping[str, str]) -> ProviderSettings:
    if "wire" not in spec or "base_url" not in spec:
        raise ConfigError(f"provider {name!r} needs 'wire' and 'base_url'")
    api_key = spec.get("api_key")
    key_env = spec.get("api_key_env")
    if key_env:
        api_key = env.get(key_env)
        if api_key is None:
            raise ConfigError(f"provider {name!r}: environment variable {key_env} is not set")
    known = {
        "wire",
        "base_url",
        "api_key",
        "api_key_env",
        "headers",
        "timeout",
        "connect_timeout",
        "max_connections",
    }
    max_connections = spec.get("max_connections")
    if isinstance(max_connections, str) and max_connections.strip().isdecimal():
        max_connections = int(max_connections)  # from a ${VAR} substitution
    if max_connections is not None and (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ConfigError(
            f"provider {name!r}: max_connections must be a whole number of at least 1"
        )
    return ProviderSettings(
        name=name,
        wire=str(spec["wire"]),
        base_url=str(spec["base_url"]).rstrip("/"),
        api_key=api_key,
        headers=tuple((str(k), str(v)) for k, v in (spec.get("headers") or {}).items()),
        timeout=float(spec.get("timeout", 600.0)),
        connect_timeout=float(spec.get("connect_timeout", 10.0)),
        max_connections=max_connections,
        options=_pairs({k: v for k, v in spec.items() if k not in known}),
    )


DEPLOYMENT_KEYS = frozenset(
    {
        "id",
        "provider",
        "model",
        "region",
        "tier",
        "weight",
        "priority",
        "max_input_tokens",
        "max_output_tokens",
        "price_key",
        "timeout",
        "rpm",
        "tpm",
    }
)


def _per_minute(group: str, spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"model {group!r}: deployment {key} must be a positive integer")
    return value


def _parse_deployment(
    group: str, i: int, d: Mapping[str, Any], providers: Mapping[str, ProviderSettings]
) -> Deployment:
    if not isinstance(d, Mapping):
        raise ConfigError(f"model {group!r}: deployment {i} must be a mapping")
    unknown = sorted(str(k) for k in set(d) - DEPLOYMENT_KEYS)
    if unknown:
        known = ", ".join(sorted(DEPLOYMENT_KEYS))
        raise ConfigError(
            f"model {group!r}: deployment {i} has unknown key(s) {', '.join(unknown)} "
            f"(known: {known})"
        )
    if "provider" not in d:
        raise ConfigError(f"model {group!r}: deployment {i} needs 'provider'")
    provider = str(d["provider"])
    if provider not in providers:
        raise ConfigError(f"model {group!r}: unknown provider {provider!r}")
    return Deployment(
        id=str(d.get("id") or f"{group}/{provider}/{i}"),
        group=group,
        provider=provider,
        model=str(d.get("model", group)),
        wire=providers[provider].wire,
        region=d.get("region"),
        tier=d.get("tier"),
        weight=float(d.get("weight", 1.0)),
        priority=int(d.get("priority", i)),
        max_input_tokens=d.get("max_input_tokens"),
        max_output_tokens=d.get("max_output_tokens"),
        price_key=d.get("price_key"),
        timeout=d.get("timeout"),
        rpm=_per_minute(group, d, "rpm"),
        tpm=_per_minute(group, d, "tpm"),
    )


def _parse_group(spec: Mapping[str, Any], providers: Mapping[str, ProviderSettings]) -> ModelGroup:
    name = str(spec["name"])
    deployments = [
        _parse_deployment(name, i, d, providers)
        for i, d in enumerate(spec.get("deployments") or [])
    ]
    if not deployments:
        raise ConfigError(f"model {name!r} has no deployments")
    known = {
        "name",
        "deployments",
        "kind",
        "strategy",
        "aliases",
        "fallbacks",
        "context_window_fallbacks",
        "owned_by",
    }
    return ModelGroup(
        name=name,
        deployments=tuple(deployments),
        kind=str(spec.get("kind", "chat")),
        strategy=str(spec.get("strategy", "priority")),
        strategy_options={k: v for k, v in spec.items() if k not in known},
        aliases=tuple(spec.get("aliases") or ()),
        fallbacks=tuple(spec.get("fallbacks") or ()),
        context_window_fallbacks=tuple(spec.get("context_window_fallbacks") or ()),
        owned_by=str(spec.get("owned_by", "faregate")),
    )


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings: YAML file (if any), then FAREGATE_* environment, then overrides."""
    env = os.environ if env is None else env
    path = path or env.get("FAREGATE_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from None
    raw.update(overrides or {})
    raw = _expand(raw, env)
    server = raw.get("server") or {}
    providers = {n: _parse_provider(n, s, env) for n, s in (raw.get("providers") or {}).items()}
    groups = [_parse_group(g, providers) for g in raw.get("models") or []]
    settings = Settings(
        host=str(env.get("FAREGATE_HOST") or server.get("host", "127.0.0.1")),
        port=int(env.get("FAREGATE_PORT") or server.get("port", 8080)),
        database_url=str(
            env.get("FAREGATE_DATABASE_URL")
            or raw.get("database_url")
            or "sqlite+aiosqlite:///faregate.db"
        ),
        redis_url=env.get("FAREGATE_REDIS_URL") or raw.get("redis_url"),
        admin_key=env.get("FAREGATE_ADMIN_KEY") or raw.get("admin_key"),
        secret_key=env.get("FAREGATE_SECRET_KEY") or raw.get("secret_key"),
        max_body_bytes=int(server.get("max_body_bytes", 20 * 1024 * 1024)),
        request_timeout=float(server.get("request_timeout", 600.0)),
        currency=str(raw.get("currency", "USD")),
        data_dir=str(env.get("FAREGATE_DATA_DIR") or raw.get("data_dir", ".")),
        providers=providers,
        raw=raw,
    )
    for group in groups:
        settings.models[group.name] = group
    return settings
