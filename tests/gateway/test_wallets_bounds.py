"""The wallet hold is a true bound, and a stream cut by its client is charged for what the
provider reported and the text relayed, on each upstream wire, through a running gateway in
front of the mock provider (whose CJK token count runs above four characters a token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.server import MockServer
from tests.gateway.conftest import ADMIN_KEY, Running, gateway_config, start_gateway
from tests.gateway.ledger_view import finish_of
from tests.gateway.test_wallets_release import _chat, _finished, _request_record, _wallet

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MILLION = Decimal(10**6)
# Rates per 1M tokens (input, output) of the catalog models the test gateway serves.
RATES = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "claude-sonnet-4": (Decimal(3), Decimal(15)),
    "gemini-thinking": (Decimal("0.30"), Decimal("2.50")),  # priced as gemini-2.5-flash
}
THINKING = {  # a Gemini model that spends half its output thinking (the mock's rule)
    "name": "gemini-thinking",
    "deployments": [
        {"provider": "gemini", "model": "gemini-reasoning-flash", "price_key": "gemini-2.5-flash"}
    ],
}


@pytest.fixture
async def gw(tmp_path: Path, mock: MockServer) -> AsyncIterator[Running]:
    models = gateway_config(mock.url)["models"] + [THINKING]
    url = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    running = await start_gateway(tmp_path, url, mock, {"models": models})
    yield running
    await running.runner.cleanup()


def _price(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    rate_in, rate_out = RATES[model]
    return (input_tokens * rate_in + output_tokens * rate_out) / MILLION


async def test_a_cjk_prompt_is_held_above_its_real_price_and_the_wallet_stays_above_zero(
    gw: Running, mock: MockServer
) -> None:
    text = "価格表を見せてください。" * 40  # 480 characters, 1,440 UTF-8 bytes
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": text}],
    }
    mock.config.deployments["openai"] = MockBehaviour(output_tokens=20)
    held = _price("gpt-4o-mini", 3 + 4 + 1440, 20)  # priming, framing, one token a byte
    # The wallet covers one hold; after it the balance is below a second one.
    wallet_id = await _wallet(gw, "0.00025")
    status, answer = await _chat(gw, body)
    assert status == 200, answer
    # The provider counts a token per CJK character: four times chars / 4, which the
    # hold priced at the old estimate (3 + 4 + 120 input tokens) would not have covered.
    real_input = 480 + 4
    assert answer["usage"]["prompt_tokens"] == real_input
    real = _price("gpt-4o-mini", real_input, 20)
    assert real > _price("gpt-4o-mini", 3 + 4 + 120, 20)
    post = finish_of(await _finished(gw, wallet_id))
    assert post["kind"] == "post"
    assert Decimal(post["reserved"]) == held and held >= real
    assert Decimal(post["consumed"]) == real  # the post never exceeds its hold
    status, refused = await _chat(gw, body)
    assert status == 402 and refused["error"]["code"] == "insufficient_credits"
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{gw.url}/api/v1/wallets/{wallet_id}", headers=ADMIN) as r,
    ):
        wallet = (await r.json())["wallet"]
    assert Decimal(wallet["credits_balance"]) >= 0
    assert Decimal(wallet["credits_ongoing_usage_balance"]) == 0


async def read_then_leave(gw: Running, body: dict[str, Any], pieces: int) -> tuple[str, str]:
    """Stream `body`, read until `pieces` chunks of text arrived, then disconnect: the
    request id and the text."""
    text: list[str] = []
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {gw.key}"},
        ) as r,
    ):
        assert r.status == 200
        request_id = r.headers["x-faregate-request-id"]
        while len(text) < pieces:
            line = (await r.content.readline()).strip()
            if not line.startswith(b"data: {"):
                continue
            for choice in orjson.loads(line[6:])["choices"]:
                if piece := choice["delta"].get("content"):
                    text.append(piece)
    return request_id, "".join(text)


# (public model, mock deployment, output reported by the provider so far after `pieces`
# text chunks relayed (None: nothing reported), input the provider reported (None: none;
# the gateway's expected count), reasoning it reported).
WIRES = [
    ("gpt-4o-mini", "openai", None, None, 0),
    # message_start: the input (4 tokens of text + 4 of framing) and one output token.
    ("claude-sonnet-4", "anthropic", lambda pieces: 1, 8, 0),
    # Every record: the input, the 100 thinking tokens, and the text tokens so far; the
    # gateway has parsed the record after the last one relayed when the client leaves.
    ("gemini-thinking", "gemini", lambda pieces: pieces + 1 + 100, 8, 100),
]


@pytest.mark.parametrize(("model", "deployment", "reported", "reported_input", "reasoning"), WIRES)
async def test_a_client_leaving_mid_stream_pays_what_the_provider_reported_and_the_text_relayed(
    gw: Running,
    mock: MockServer,
    model: str,
    deployment: str,
    reported: Any,
    reported_input: int | None,
    reasoning: int,
) -> None:
    wallet_id = await _wallet(gw)
    # A chunk every 0.1 s: the client is gone before the gateway relays the next one.
    mock.config.deployments[deployment] = MockBehaviour(chunk_delay=0.1, output_tokens=200)
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "tell me a story"}],
    }
    pieces = 6
    _, text = await read_then_leave(gw, body, pieces)
    post = finish_of(await _finished(gw, wallet_id))
    assert post["kind"] == "post"
    record = await _request_record(gw, post["hold_id"])
    assert record["status"] == 499 and record["usage_estimated"] is True
    relayed = -(-len(text) // 4)  # the text relayed, at four characters a token
    visible = max(relayed, reported(pieces) - reasoning) if reported else relayed
    input_tokens = reported_input if reported_input is not None else 3 + 4 + 4
    assert (record["input_tokens"], record["output_tokens"]) == (input_tokens, visible + reasoning)
    price = _price(model, input_tokens, visible + reasoning)
    assert Decimal(post["consumed"]) == price <= Decimal(post["reserved"])  # the rest released
