"""Shared fixtures: the shipped catalog, and a helper that builds a catalog from YAML text."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from faregate.pricing import PriceCatalog, load_catalog
from faregate.pricing.loader import build_catalog
from faregate.pricing.yamlio import load_yaml


@pytest.fixture(scope="session")
def shipped() -> PriceCatalog:
    return load_catalog()


@pytest.fixture
def catalog_from_yaml() -> Callable[[str], PriceCatalog]:
    def build(text: str) -> PriceCatalog:
        return build_catalog([("test.yaml", load_yaml(text, name="test.yaml"))])

    return build
