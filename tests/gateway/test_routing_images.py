"""`cheapest` and `max_price` on image requests through the running gateway and the real
price catalog: n x size x quality x steps decides, and a deployment the catalog cannot
price for images (a token-priced model, an unknown one) is ranked last or left out."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import Running, start_gateway

NAMES = ("img-a", "img-b", "img-steps", "img-tokens", "img-unknown")


def _config(mock_url: str, first: str = "img-tokens") -> dict[str, Any]:
    def price(model: str, **rates: Any) -> dict[str, Any]:
        return {"provider": "xtest", "model": model, "effective_from": "2020-01-01", **rates}

    def dep(name: str) -> dict[str, Any]:
        return {"id": name, "provider": name, "model": "dall-e-3", "price_key": f"{name}-model"}

    # Ordered so the unpriceable ones come first: cheapest must move them to the end.
    order = [first, *(n for n in NAMES if n != first)]
    return {
        "providers": {
            n: {"wire": "openai", "base_url": f"{mock_url}/d/{n}/v1", "api_key": "k"} for n in NAMES
        },
        "prices": {
            "models": [
                # a is cheap at 1024x1024 standard, b at 1792x1024 and at hd; steps-priced
                # at 0.03 + 0.001 per step (30 by default) wins only when few steps are asked.
                price(
                    "img-a-model",
                    mode="image",
                    image_default_quality="standard",
                    images={
                        "1024x1024": {"standard": "0.02", "hd": "0.10"},
                        "1792x1024": {"standard": "0.09", "hd": "0.12"},
                    },
                ),
                price(
                    "img-b-model",
                    mode="image",
                    image_default_quality="standard",
                    images={
                        "1024x1024": {"standard": "0.04", "hd": "0.055"},
                        "1792x1024": {"standard": "0.05", "hd": "0.07"},
                    },
                ),
                price(
                    "img-steps-model",
                    mode="image",
                    steps={"default": 30, "base": "0.03", "per_step": "0.001"},
                ),
                # Priced per token only: the catalog cannot price an image request on it.
                price("img-tokens-model", input="0.10", output="0.40"),
            ]
        },
        "models": [
            {
                "name": "pictures",
                "kind": "images",
                "strategy": "cheapest",
                "deployments": [dep(n) for n in order],
            }
        ],
    }


async def _image(
    s: aiohttp.ClientSession, gw: Running, headers: dict[str, str] | None = None, **body: Any
) -> tuple[int, dict[str, str], Any]:
    payload = {"model": "pictures", "prompt": "a lighthouse", **body}
    auth = {"Authorization": f"Bearer {gw.key}", **(headers or {})}
    async with s.post(f"{gw.url}/v1/images/generations", json=payload, headers=auth) as r:
        return r.status, dict(r.headers), await r.json()


async def test_cheapest_prices_each_image_request_and_ranks_unpriceable_deployments_last(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock.url)
    )
    try:
        async with aiohttp.ClientSession() as s:
            asks = [
                ({"size": "1024x1024", "quality": "standard"}, "img-a"),  # a .02 b .04 s .06
                ({"size": "1792x1024", "quality": "standard"}, "img-b"),  # a .09 b .05 s .06
                ({"size": "1024x1024", "quality": "hd"}, "img-b"),  # a .10 b .055 s .06
                ({"size": "1024x1024", "quality": "hd", "steps": 1}, "img-steps"),  # s .031
                ({"size": "1024x1024", "quality": "hd", "steps": 50}, "img-b"),  # s .08
                ({"n": 3, "size": "1024x1024", "quality": "standard"}, "img-a"),
            ]
            served = []
            for body, _ in asks:
                status, headers, answer = await _image(s, gw, **body)
                assert status == 200, answer
                served.append(headers["x-faregate-deployment"])
                assert headers["x-faregate-attempts"] == "1"
            assert served == [want for _, want in asks]
            # The settled cost is the served deployment's price of n images of that kind.
            status, headers, answer = await _image(s, gw, n=2, size="1024x1024")
            assert (status, headers["x-faregate-deployment"]) == (200, "img-a")
            assert len(answer["data"]) == 2
            assert Decimal(headers["x-faregate-cost"]) == Decimal("0.04")
        for name in ("img-tokens", "img-unknown"):
            assert mock.stats.requests_for(deployment=name) == 0
    finally:
        await gw.runner.cleanup()


async def test_max_price_on_an_image_request_leaves_out_deployments_it_cannot_price(
    tmp_path: Path, mock: MockServer
) -> None:
    gw = await start_gateway(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", mock, _config(mock.url)
    )
    try:
        async with aiohttp.ClientSession() as s:
            ceiling = {"x-faregate-max-price": "0.06"}
            status, headers, _ = await _image(s, gw, ceiling, size="1792x1024", quality="hd")
            # a .12, b .07, steps .06 (within), tokens and unknown cannot be shown to be.
            assert (status, headers["x-faregate-deployment"]) == (200, "img-steps")
            status, _, error = await _image(
                s, gw, {"x-faregate-max-price": "0.01"}, size="1024x1024"
            )
            assert status == 400 and error["error"]["code"] == "max_price_exceeded"
            assert "0.02" in error["error"]["message"]  # the cheapest priced deployment
        for name in ("img-tokens", "img-unknown"):
            assert mock.stats.requests_for(deployment=name) == 0
    finally:
        await gw.runner.cleanup()
