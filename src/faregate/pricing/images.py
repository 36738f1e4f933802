"""The price of one generated image under a ModelPrice's image rules.

The first rule of the entry that covers the image applies, in this order: the step rule
(a step table may also bracket by maximum size: the smallest bracket holding the image
applies); the size x quality table; the per-megapixel price. Size x quality table lookup:
  1. A size of None or "auto" falls back to `image_default_size`; a quality of None falls
     back to `image_default_quality`; "auto" quality with no "auto" column is unknown.
  2. Rows match when their size (quality) equals the known one or is "*"; when a value is
     unknown every row matches on that axis.
  3. Of the matching rows, the most specific ones win: an exact size outranks an exact
     quality, which outranks "*" (so (size, q) > (size, *) > (*, q) > (*, *)).
  4. If several rows remain (only when something is unknown), the dearest one is taken, so
     an estimate or hold never falls short.
Nothing here returns 0 for an image it cannot price: it raises UnpricedUsage.
"""

from __future__ import annotations

import re
from decimal import Decimal

from faregate.pricing.errors import UnpricedUsage
from faregate.pricing.price import ANY, ImageRate, ModelPrice, StepBracket, StepRule

_SIZE = re.compile(r"^\s*(\d+)\s*(?:x|X|-x-|\*)\s*(\d+)\s*$")
MEGAPIXEL = Decimal(1_000_000)


def normalize_size(size: str | None) -> str | None:
    """ "1024x1024", "1024-x-1024", "1024X1024" -> "1024x1024"; "*" stays; else None."""
    if size is None:
        return None
    if size.strip() == ANY:
        return ANY
    match = _SIZE.match(size)
    if not match:
        return None
    return f"{int(match.group(1))}x{int(match.group(2))}"


def size_pixels(size: str | None) -> int | None:
    normal = normalize_size(size)
    if normal is None or normal == ANY:
        return None
    width, height = normal.split("x")
    pixels = int(width) * int(height)
    return pixels or None


def image_unit_price(
    price: ModelPrice, size: str | None, quality: str | None, steps: int | None
) -> Decimal:
    """USD for one image of this size, quality and step count."""
    wanted_size = _known_size(size) or price.image_default_size
    if price.steps is not None:
        try:
            return _step_price(price, price.steps, steps, wanted_size)
        except UnpricedUsage:
            if not price.images and price.per_megapixel is None:
                raise
    if price.images:
        hit = _table_price(price, wanted_size, quality)
        if hit is not None:
            return hit
    pixels = size_pixels(wanted_size)
    if price.per_megapixel is not None and pixels is not None:
        return price.per_megapixel * Decimal(pixels) / MEGAPIXEL
    raise UnpricedUsage(
        f"{price.label}: no image price for size {size or 'unknown'}, "
        f"quality {quality or 'unknown'}"
    )


def _known_size(size: str | None) -> str | None:
    if size is None or size.strip().lower() == "auto":
        return None
    normal = normalize_size(size)
    if normal is None or normal == ANY or size_pixels(normal) is None:
        return None
    return normal


def _table_price(price: ModelPrice, size: str | None, quality: str | None) -> Decimal | None:
    wanted_quality = _known_quality(price, quality)
    best: list[ImageRate] = []
    best_score = -1
    for row in price.images:
        score = _score(row.size, size, 2)
        quality_score = _score(row.quality, wanted_quality, 1)
        if score < 0 or quality_score < 0:
            continue
        score += quality_score
        if score > best_score:
            best, best_score = [row], score
        elif score == best_score:
            best.append(row)
    return max((row.price for row in best), default=None)


def _known_quality(price: ModelPrice, quality: str | None) -> str | None:
    if quality is None:
        return price.image_default_quality
    wanted = quality.strip().lower()
    if wanted == "auto" and not any(row.quality == "auto" for row in price.images):
        return None
    return wanted


def _score(row_value: str, wanted: str | None, weight: int) -> int:
    """weight if exact, 0 if row is "*" or the wanted value is unknown, -1 if no match."""
    if wanted is None or row_value == ANY:
        return 0
    return weight if row_value == wanted else -1


def _step_price(price: ModelPrice, rule: StepRule, steps: int | None, size: str | None) -> Decimal:
    count = steps if steps is not None else rule.default_steps
    if count is not None and count <= 0:
        raise UnpricedUsage(f"{price.label}: invalid step count {count}")
    if rule.table:
        return _bracket_price(price, rule.table, count, size)
    if rule.per_step is None or count is None:
        raise UnpricedUsage(f"{price.label}: step count unknown and no default")
    return rule.base + rule.per_step * count


def _bracket_price(
    price: ModelPrice, table: tuple[StepBracket, ...], count: int | None, size: str | None
) -> Decimal:
    """The smallest size bracket holding the image (every bracket when the size is
    unknown, taking the dearest), then its first step bracket holding `count`."""
    pixels = size_pixels(size)
    groups: dict[str | None, list[StepBracket]] = {}
    for bracket in table:
        groups.setdefault(bracket.max_size, []).append(bracket)
    fitting = [s for s in groups if s is None or pixels is None or pixels <= (size_pixels(s) or 0)]
    if pixels is not None:
        fitting = fitting[:1]
    if not fitting:
        raise UnpricedUsage(f"{price.label}: no step price for images of {size}")
    return max(_steps_in(price, groups[s], count) for s in fitting)


def _steps_in(price: ModelPrice, brackets: list[StepBracket], count: int | None) -> Decimal:
    if count is None:
        return max(b.price for b in brackets)
    for bracket in brackets:
        if bracket.max_steps is None or count <= bracket.max_steps:
            return bracket.price
    raise UnpricedUsage(f"{price.label}: no price for {count} steps")
