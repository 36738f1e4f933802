"""The pre-flight moderation provider: asks a model group of kind `moderations` (e.g.
OpenAI's free `omni-moderation-latest`) whether any text is flagged, trying its deployments
in order. Sends only the texts, never the request's other fields; logs no text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faregate.config import ConfigError, ModelGroup
from faregate.errors import FaregateError, ServiceUnavailable
from faregate.providers.base import Provider

KIND = "moderations"


class UpstreamModeration:
    """Implements policy.ModerationProvider over the configured upstreams."""

    def __init__(self, group: ModelGroup, upstreams: Mapping[str, Provider]) -> None:
        if group.kind != KIND:
            raise ConfigError(
                f"moderation.provider_model {group.name!r} must be a model of kind {KIND}"
            )
        usable = [
            d
            for d in group.deployments
            if KIND in getattr(upstreams.get(d.provider), "capabilities", ())
        ]
        if not usable:
            raise ConfigError(f"no deployment of {group.name!r} supports moderations")
        self._deployments = usable
        self._upstreams = upstreams
        self.calls = 0

    async def flagged(self, texts: Sequence[str]) -> bool:
        error: FaregateError = ServiceUnavailable("No moderation deployment answered.")
        for deployment in self._deployments:
            upstream: Any = self._upstreams[deployment.provider]
            try:
                result = await upstream.moderations({"input": list(texts)}, deployment.model)
            except FaregateError as err:
                error = err
                continue
            self.calls += 1
            return any(
                isinstance(r, dict) and r.get("flagged") is True
                for r in result.body.get("results") or []
            )
        raise error
