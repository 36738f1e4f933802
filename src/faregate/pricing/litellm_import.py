"""Convert LiteLLM's model_prices_and_context_window.json into faregate price entries.

Numbers are read exactly (JSON floats through their literal text) and per-token prices
become per-1M. The traps handled: image size/quality/steps live in the key; on
image_generation entries `input_cost_per_pixel` and `input_cost_per_image` price the
OUTPUT image, while on chat entries `input_cost_per_image` prices an input image; image
output tokens have their own rate; `_priority`/`_flex`/`_batches` rates become tier
multipliers only when one exact multiplier fits them all. Entries that fail the catalog's
validation (e.g. a per-token price typed per-1K) are skipped with the reason, never kept.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from faregate.pricing.errors import PriceCatalogError
from faregate.pricing.litellm_keys import MAX, KeyParts, split_key
from faregate.pricing.litellm_values import (
    image_fields,
    positive,
    tiers,
    times_pixels,
    token_fields,
    unused_prices,
)
from faregate.pricing.parse import parse_entry
from faregate.pricing.yamlio import dump_yaml_document

PriceEntry = dict[str, Any]
MODES = {
    "chat": "chat", "completion": "chat", "responses": "chat", "embedding": "embedding",
    "image_generation": "image", "moderation": "moderation",
    "audio_transcription": "audio_transcription",
}  # fmt: skip
SOURCE = "LiteLLM model_prices_and_context_window.json"


@dataclass(slots=True)
class LitellmImport:
    entries: list[PriceEntry]
    skipped: list[tuple[str, str]]  # (LiteLLM key, reason)


@dataclass(slots=True)
class _Group:
    """Every LiteLLM key that prices one (provider, model)."""

    provider: str | None
    model: str
    mode: str
    keys: list[str] = field(default_factory=list)
    base: dict[str, Any] = field(default_factory=dict)
    base_key: str | None = None
    rows: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    brackets: dict[tuple[str | None, int | None], Decimal] = field(default_factory=dict)


def import_litellm(json_text: str, *, effective_from: date | datetime) -> list[PriceEntry]:
    """Price entries (the catalog's YAML schema) for every importable LiteLLM model."""
    return convert_litellm(json_text, effective_from=effective_from).entries


def convert_litellm(json_text: str, *, effective_from: date | datetime) -> LitellmImport:
    """Like import_litellm, also returning what was skipped and why."""
    groups: dict[tuple[str | None, str], _Group] = {}
    skipped: list[tuple[str, str]] = []
    for key, spec in _parse_json(json_text).items():
        reason = _skip_reason(key, spec) or _collect(groups, key, spec)
        if reason:
            skipped.append((key, reason))
    entries = []
    usable = (g for g in groups.values() if g.keys)  # every key of the others was skipped
    for group in sorted(usable, key=lambda g: (g.provider or "", g.model)):
        entry = _entry(group, effective_from)
        try:
            parse_entry(entry, f"LiteLLM {group.keys[0]}")
        except PriceCatalogError as exc:
            skipped.append((group.keys[0], exc.message))
            continue
        entries.append(entry)
    return LitellmImport(entries=entries, skipped=skipped)


def dump_yaml(entries: list[PriceEntry], skipped: list[tuple[str, str]] | None = None) -> str:
    """A price file (loadable by load_catalog) holding `entries`; skips become comments."""
    lines = [f"# Imported from {SOURCE}: {len(entries)} models.",
             "# USD; token prices per 1M tokens, image prices per image."]  # fmt: skip
    for key, reason in skipped or ():
        lines.append(f"# skipped {key}: {reason}".replace("\n", " "))
    return dump_yaml_document({"version": 1, "models": entries}, header="\n".join(lines) + "\n")


def import_file(
    path: Path, output: Path | None, *, effective_from: date | datetime | None = None
) -> int:
    """`faregate prices import FILE [--output PATH]`: write a price file (stdout when no
    output) and return the number of models imported."""
    when = effective_from or datetime.now(UTC).date()
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise PriceCatalogError(f"cannot read {path}: {exc}") from None
    result = convert_litellm(text, effective_from=when)
    document = dump_yaml(result.entries, result.skipped)
    if output is None:
        sys.stdout.write(document)
    else:
        Path(output).write_text(document, "utf-8")
    return len(result.entries)


def _parse_json(json_text: str) -> dict[str, Any]:
    def reject(constant: str) -> Any:
        raise ValueError(f"{constant} is not a price")

    try:
        data = json.loads(json_text, parse_float=Decimal, parse_constant=reject)
    except ValueError as exc:
        raise PriceCatalogError(f"not a LiteLLM price map: {exc}") from None
    if not isinstance(data, dict):
        raise PriceCatalogError("not a LiteLLM price map: the top level must be an object")
    return data


def _skip_reason(key: str, spec: Any) -> str | None:
    if key == "sample_spec":
        return "schema sample"
    if not isinstance(spec, dict):
        return "not a price entry"
    mode = spec.get("mode")
    if mode is None:
        return "mode is null"
    if mode not in MODES:
        return f"mode {mode!r} is not priced by faregate"
    if mode == "audio_transcription" and not (
        positive(spec, "input_cost_per_second") or positive(spec, "output_cost_per_second")
    ):
        # gpt-4o-transcribe and kin bill audio tokens at their own rate; one input rate
        # for text and audio tokens would misprice them.
        return "transcription priced per audio token, which the catalog does not model"
    return None


def _collect(
    groups: dict[tuple[str | None, str], _Group], key: str, spec: dict[str, Any]
) -> str | None:
    provider = spec.get("litellm_provider")
    provider = provider if isinstance(provider, str) and provider else None
    parts = split_key(key, provider)
    group = groups.get((provider, parts.model))
    if group is None:
        group = groups[(provider, parts.model)] = _Group(provider, parts.model, MODES[spec["mode"]])
    if parts.is_variant:
        reason = _add_variant(group, parts, spec)
    elif group.base_key is not None:
        reason = f"same model as {group.base_key}"
    else:
        group.base, group.base_key, group.mode = spec, key, MODES[spec["mode"]]
        reason = None
    if reason is None:
        group.keys.append(key)
    return reason


def _add_variant(group: _Group, parts: KeyParts, spec: dict[str, Any]) -> str | None:
    """A size/quality/steps key: only its per-image price is used."""
    per_image = positive(spec, "output_cost_per_image") or positive(spec, "input_cost_per_image")
    per_pixel = positive(spec, "input_cost_per_pixel") or positive(spec, "output_cost_per_pixel")
    if per_image is None and per_pixel is not None and parts.size not in (None, "*"):
        per_image = times_pixels(per_pixel, str(parts.size))
    if per_image is None:
        return "no per-image price in a size/quality/steps entry"
    if parts.steps is not None:
        size = None if parts.size in (None, "*") else parts.size
        group.brackets[(size, None if parts.steps == MAX else int(parts.steps))] = per_image
    else:
        group.rows[(str(parts.size), parts.quality or "*")] = per_image
    return None


def _entry(group: _Group, effective_from: date | datetime) -> PriceEntry:
    base = group.base
    entry: PriceEntry = {} if group.provider is None else {"provider": group.provider}
    entry.update(model=group.model, mode=group.mode, effective_from=effective_from,
                 source=f"{SOURCE}: {', '.join(group.keys)}")  # fmt: skip
    notes: list[str] = []
    entry.update(token_fields(base, group.mode))
    entry.update(image_fields(base, group.mode, group.rows, group.brackets, entry, notes))
    per_second = positive(base, "output_cost_per_second") or positive(base, "input_cost_per_second")
    if per_second is not None:
        entry["per_second"] = per_second
    for name in ("max_input_tokens", "max_output_tokens"):
        value = base.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            entry[name] = value
    unused = unused_prices(base)
    if unused:
        notes.append(f"not imported: {', '.join(unused)}")
    entry_tiers = tiers(base, notes)
    if entry_tiers:
        entry["tiers"] = entry_tiers
    if notes:
        entry["notes"] = notes
    return entry
