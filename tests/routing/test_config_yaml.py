from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from faregate.config import load_settings
from faregate.routing.base import RouteRequest
from faregate.routing.health import HealthRegistry
from faregate.routing.router import Router

from .fakes import TokenPrices

CONFIG = """
providers:
  openai: {wire: openai, base_url: "http://127.0.0.1:9/v1"}
  flux: {wire: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  - name: images
    kind: images
    strategy: tiered
    rules:
      - match: {tags: [draft]}
        group: cheap-images
      - match: {metadata: {stage: final}}
        group: premium-images
    default: cheap-images
    deployments:
      - {id: images-default, provider: openai, model: dall-e-3}
  - name: cheap-images
    kind: images
    strategy: cheapest
    deployments:
      - {id: sdxl, provider: flux, model: sdxl-turbo}
      - {id: dalle2, provider: openai, model: dall-e-2}
  - name: premium-images
    kind: images
    strategy: ab_split
    experiment: premium-2025
    arms:
      - {deployment: gpt-image, percent: 50}
      - {deployment: flux-pro, percent: 50}
    sticky: user
    deployments:
      - {id: gpt-image, provider: openai, model: gpt-image-1}
      - {id: flux-pro, provider: flux, model: flux-pro}
"""


def test_routing_options_written_in_yaml_build_a_router(tmp_path: Path) -> None:
    path = tmp_path / "faregate.yaml"
    path.write_text(CONFIG)
    settings = load_settings(path, env={})
    prices = TokenPrices({}, image={"sdxl": "0.002", "dalle2": "0.02"})
    router = Router(settings.models, health=HealthRegistry(), estimator=prices)
    images = router.resolve("images")
    draft = RouteRequest(
        kind="images", images=2, tags=frozenset({"draft"}), max_price=Decimal("0.01")
    )
    assert [d.id for d in router.plan(images, draft)] == ["sdxl"]
    final = RouteRequest(kind="images", user="ana", metadata={"stage": "final"})
    first = router.plan(images, final)[0]
    assert first.id in {"gpt-image", "flux-pro"}
    assert all(router.plan(images, final)[0] == first for _ in range(20))
