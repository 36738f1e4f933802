"""What providers charge us: a versioned price catalog and the exact cost of a Usage.
Prices only; what customers pay is billing's business, not this package's."""

from faregate.pricing.catalog import PriceCatalog
from faregate.pricing.cost import (
    CostParts,
    cost_of,
    cost_parts,
    estimate_images_cost,
    estimate_seconds_cost,
    estimate_tokens_cost,
)
from faregate.pricing.errors import PriceCatalogError, PriceNotFound, UnpricedUsage
from faregate.pricing.loader import catalog_from_section, load_catalog
from faregate.pricing.price import ModelPrice

__all__ = [
    "CostParts",
    "ModelPrice",
    "PriceCatalog",
    "PriceCatalogError",
    "PriceNotFound",
    "UnpricedUsage",
    "catalog_from_section",
    "cost_of",
    "cost_parts",
    "estimate_images_cost",
    "estimate_seconds_cost",
    "estimate_tokens_cost",
    "load_catalog",
]
