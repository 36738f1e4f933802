"""Build the PriceCatalog from the shipped data/prices.yaml, user price files and the
gateway config's `prices:` section. Later documents add versions, or replace a version
with the same provider, model and effective_from; provider settings merge by key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from faregate.pricing.catalog import Key, PriceCatalog
from faregate.pricing.errors import PriceCatalogError
from faregate.pricing.fields import check_keys, to_list, to_mapping
from faregate.pricing.parse import ProviderDefaults, parse_entry, parse_provider
from faregate.pricing.price import TimeWindow
from faregate.pricing.yamlio import load_yaml

DOCUMENT_KEYS = frozenset({"version", "providers", "models"})
SECTION_KEYS = DOCUMENT_KEYS | {"files", "include_builtin"}


def builtin_prices_text() -> str:
    return resources.files("faregate.pricing").joinpath("data/prices.yaml").read_text("utf-8")


def load_catalog(
    paths: Sequence[Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    include_builtin: bool = True,
) -> PriceCatalog:
    """The shipped prices, then each file in `paths`, then `overrides` (a mapping of the
    same shape as a price file: {providers: ..., models: [...]})."""
    documents: list[tuple[str, Any]] = []
    if include_builtin:
        documents.append(
            ("faregate/pricing/data/prices.yaml", _load_text(builtin_prices_text(), "prices.yaml"))
        )
    for path in paths or ():
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise PriceCatalogError(f"cannot read price file {path}: {exc}") from None
        documents.append((str(path), _load_text(text, str(path))))
    if overrides:
        documents.append(("config prices", dict(overrides)))
    return build_catalog(documents)


def catalog_from_section(section: Mapping[str, Any]) -> PriceCatalog:
    """The catalog for a gateway config `prices:` section: optional `files: [paths]` and
    `include_builtin: false`, plus `providers`/`models` overrides."""
    spec = to_mapping(dict(section), "config prices", "prices")
    check_keys(spec, SECTION_KEYS, "config prices")
    files = [Path(str(p)) for p in to_list(spec.get("files", []), "config prices", "files")]
    include = spec.get("include_builtin", True)
    if not isinstance(include, bool):
        raise PriceCatalogError("config prices: include_builtin must be true or false")
    overrides = {k: v for k, v in spec.items() if k in DOCUMENT_KEYS}
    return load_catalog(files, overrides, include_builtin=include)


def build_catalog(documents: Sequence[tuple[str, Any]]) -> PriceCatalog:
    """Catalog from parsed documents, in order (name, mapping)."""
    checked = [(name, _document(raw, name)) for name, raw in documents]
    providers = _merge_providers(checked)
    prices = []
    aliases: dict[Key, str] = {}
    for name, doc in checked:
        seen: dict[tuple[str, str, object], int] = {}
        for i, raw in enumerate(to_list(doc.get("models") or [], name, "models")):
            entry = parse_entry(raw, f"{name}: models[{i}]", providers)
            price = entry.price
            key = (price.provider or "", price.model, price.effective_from)
            if key in seen:
                raise PriceCatalogError(
                    f"{name}: models[{i}] repeats models[{seen[key]}] "
                    f"({price.label} from {price.effective_from.isoformat()})"
                )
            seen[key] = i
            prices.append(price)
            for alias in entry.aliases:
                aliases[(price.provider or "", alias)] = price.model
    return PriceCatalog(prices, aliases)


def _load_text(text: str, name: str) -> Any:
    return load_yaml(text, name=name) or {}


def _document(raw: Any, name: str) -> dict[Any, Any]:
    doc = to_mapping(raw, name, "price document")
    check_keys(doc, DOCUMENT_KEYS, name)
    if doc.get("version", 1) != 1:
        raise PriceCatalogError(f"{name}: unsupported price file version {doc['version']!r}")
    return doc


def _merge_providers(
    documents: Sequence[tuple[str, dict[Any, Any]]],
) -> dict[str, ProviderDefaults]:
    tiers: dict[str, dict[str, Any]] = {}
    windows: dict[str, tuple[TimeWindow, ...]] = {}
    for name, doc in documents:
        section = to_mapping(doc.get("providers") or {}, name, "providers")
        for provider, raw in section.items():
            where = f"{name}: providers.{provider}"
            parsed = parse_provider(raw, where)
            tiers.setdefault(str(provider), {}).update(parsed.tiers)
            if raw and "windows" in raw:
                windows[str(provider)] = parsed.windows
    return {
        p: ProviderDefaults(tiers=tuple(tiers[p].items()), windows=windows.get(p, ()))
        for p in tiers
    }
