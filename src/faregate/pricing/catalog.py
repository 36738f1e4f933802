"""The provider price catalog: price versions keyed by (provider, model), looked up at an
instant. Immutable once built; it never invents a price for a model it does not know."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import MappingProxyType

from faregate.pricing.errors import PriceCatalogError, PriceNotFound
from faregate.pricing.price import ModelPrice

Key = tuple[str, str]  # (provider, model); provider "" for a provider-agnostic entry


class PriceCatalog:
    """Price versions by (provider, model), each list sorted by `effective_from`.

    Lookup of (model, provider): the provider's own entry (through its aliases); else, when
    `model` is "provider/model" and that provider is in the catalog, that entry; else the
    model alone: a provider-agnostic entry if there is one, otherwise the entry of the only
    provider that prices this model. A model priced by several providers and no
    provider-agnostic entry is not found by model alone.
    """

    __slots__ = ("_ambiguous", "_by_key", "_by_model", "_canonical", "_providers")
    _by_key: Mapping[Key, tuple[ModelPrice, ...]]
    _canonical: Mapping[Key, str]
    _providers: frozenset[str]
    _by_model: Mapping[str, Key]
    _ambiguous: Mapping[str, tuple[str, ...]]

    def __init__(
        self, prices: Iterable[ModelPrice], aliases: Mapping[Key, str] | None = None
    ) -> None:
        grouped: dict[Key, dict[datetime, ModelPrice]] = {}
        for price in prices:  # a later price with the same key and date replaces the earlier
            grouped.setdefault((price.provider or "", price.model), {})[price.effective_from] = (
                price
            )
        by_key: Mapping[Key, tuple[ModelPrice, ...]] = MappingProxyType({
            key: tuple(v for _, v in sorted(versions.items())) for key, versions in grouped.items()
        })  # fmt: skip
        canonical = MappingProxyType(_check_aliases(dict(aliases or {}), by_key))
        names: dict[str, set[Key]] = {}
        for key in list(by_key) + list(canonical):
            provider, name = key
            names.setdefault(name, set()).add((provider, canonical.get(key, name)))
        by_model: dict[str, Key] = {}
        ambiguous: dict[str, tuple[str, ...]] = {}
        for name, keys in names.items():
            agnostic = [k for k in keys if not k[0]]
            if agnostic or len(keys) == 1:
                by_model[name] = (agnostic or list(keys))[0]
            else:
                ambiguous[name] = tuple(sorted(k[0] for k in keys))
        _set = object.__setattr__
        _set(self, "_by_key", by_key)
        _set(self, "_canonical", canonical)
        _set(self, "_providers", frozenset(p for p, _ in by_key if p))
        _set(self, "_by_model", MappingProxyType(by_model))
        _set(self, "_ambiguous", MappingProxyType(ambiguous))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a PriceCatalog is immutable; load a new one instead")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("a PriceCatalog is immutable; load a new one instead")

    def versions(self, model: str, provider: str | None = None) -> tuple[ModelPrice, ...]:
        """Every price version that answers to (model, provider), oldest first."""
        key = self._resolve(model, provider)
        return self._by_key[key] if key else ()

    def price_for(
        self, model: str, provider: str | None = None, *, at: datetime
    ) -> ModelPrice | None:
        """The version in force at `at` (tz-aware), or None: never a zero price."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("`at` must be a timezone-aware datetime")
        versions = self.versions(model, provider)
        index = bisect_right(versions, at, key=lambda p: p.effective_from) - 1
        return versions[index] if index >= 0 else None

    def require_price(self, model: str, provider: str | None = None, *, at: datetime) -> ModelPrice:
        """Like price_for, but a missing price raises PriceNotFound saying why."""
        price = self.price_for(model, provider, at=at)
        if price is not None:
            return price
        who = f"{provider}/{model}" if provider else model
        versions = self.versions(model, provider)
        if versions:
            first = versions[0].effective_from.isoformat()
            raise PriceNotFound(
                f"no price for {who} at {at.isoformat()}: first price is from {first}"
            )
        if model in self._ambiguous and not provider:
            listed = ", ".join(self._ambiguous[model])
            raise PriceNotFound(f"{model} is priced by several providers ({listed}): name one")
        raise PriceNotFound(f"no price for model {who} in the price catalog")

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self._resolve(model, None) is not None

    def __iter__(self) -> Iterator[ModelPrice]:
        for versions in self._by_key.values():
            yield from versions

    def __len__(self) -> int:
        return len(self._by_key)

    def keys(self) -> tuple[Key, ...]:
        return tuple(sorted(self._by_key))

    def _resolve(self, model: str, provider: str | None) -> Key | None:
        if provider:
            key = (provider, self._canonical.get((provider, model), model))
            if key in self._by_key:
                return key
        prefix, _, rest = model.partition("/")
        if rest and prefix in self._providers:
            key = (prefix, self._canonical.get((prefix, rest), rest))
            if key in self._by_key:
                return key
        return self._by_model.get(model)


def _check_aliases(
    aliases: dict[Key, str], by_key: Mapping[Key, tuple[ModelPrice, ...]]
) -> dict[Key, str]:
    for (provider, alias), target in aliases.items():
        if (provider, alias) in by_key:
            raise PriceCatalogError(f"alias {alias!r} of {target!r} is also a priced model")
        if (provider, target) not in by_key:
            raise PriceCatalogError(f"alias {alias!r} points to unknown model {target!r}")
    return aliases
