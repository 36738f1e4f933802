"""The wire formats the gateway speaks: a new provider is one module and one line here."""

from __future__ import annotations

import aiohttp

from faregate.config import ConfigError, ProviderSettings
from faregate.providers.anthropic import AnthropicProvider
from faregate.providers.base import Endpoint, Provider
from faregate.providers.gemini import GeminiProvider
from faregate.providers.openai import OpenAIProvider
from faregate.providers.transport import HttpTransport

WIRES: dict[str, type] = {
    OpenAIProvider.wire: OpenAIProvider,
    AnthropicProvider.wire: AnthropicProvider,
    GeminiProvider.wire: GeminiProvider,
}


def endpoint_for(settings: ProviderSettings) -> Endpoint:
    """The Endpoint an adapter needs, from a provider's settings."""
    return Endpoint(
        name=settings.name,
        wire=settings.wire,
        base_url=settings.base_url,
        api_key=settings.api_key,
        headers=settings.headers,
        timeout=settings.timeout,
        connect_timeout=settings.connect_timeout,
        options=settings.options,
    )


def build_provider(
    endpoint: Endpoint, session: aiohttp.ClientSession, transport: HttpTransport
) -> Provider:
    """The adapter for `endpoint.wire`, sharing the app's pooled `session` and `transport`."""
    try:
        adapter = WIRES[endpoint.wire]
    except KeyError:
        known = ", ".join(sorted(WIRES))
        raise ConfigError(
            f"provider {endpoint.name!r}: unknown wire {endpoint.wire!r} (known: {known})"
        ) from None
    provider: Provider = adapter(endpoint, session, transport)
    return provider
