"""`POST /v1/audio/transcriptions` through the running gateway with the official openai SDK, on
SQLite and PostgreSQL: the transcript comes back in every response format, the audio's seconds
become a `seconds` event with its provider cost, a plan charge on the built-in `seconds`
metric bills them, a wallet hold covers them, and bad uploads get OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from lago_python_client.client import Client
from lago_python_client.models import Charge, Charges, Plan, Subscription
from sqlalchemy import select

from faregate.audio import MAX_AUDIO_BYTES
from faregate.mockprovider.server import MockServer
from faregate.mockprovider.tokens import word_pieces
from faregate.store.tables.metering import requests
from tests.conftest import create_pg_database, drop_pg_database
from tests.gateway.conftest import ADMIN_KEY, Running, gateway_config, start_gateway
from tests.gateway.ledger_view import finish_of
from tests.gateway.test_billing_e2e import subscription_start
from tests.gateway.test_wallets_release import _finished, _wallet
from tests.stored_events import events_of_request

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WHISPER = {
    "name": "whisper-1",
    "kind": "transcriptions",
    "deployments": [{"provider": "openai", "model": "whisper-1"}],
}
# Three deployments in order: a wire that cannot transcribe, a failing host, a working one.
WHISPER_FAILOVER = {
    "name": "whisper-failover",
    "kind": "transcriptions",
    "deployments": [
        {"provider": "anthropic", "model": "whisper-1"},
        {"provider": "openai", "model": "whisper-1"},
        {"provider": "compat", "model": "whisper-1"},
    ],
}
PER_SECOND = Decimal("0.0001")  # whisper-1 in the shipped catalog: $0.006 a minute
TRANSCRIPT = "".join(word_pieces(20)).strip()  # the mock's default reply length


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A silent 16-bit mono WAV of `seconds`, made with the stdlib."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * round(seconds * rate))
    return out.getvalue()


@pytest.fixture(params=["sqlite", "postgres"])
async def gw(
    request: pytest.FixtureRequest, tmp_path: Path, mock: MockServer
) -> AsyncIterator[Running]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    extra = {"models": gateway_config(mock.url)["models"] + [WHISPER, WHISPER_FAILOVER]}
    running = await start_gateway(tmp_path, url, mock, extra)
    yield running
    await running.runner.cleanup()
    if postgres:
        await drop_pg_database(url)


def client(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0)


def lago(gw: Running) -> Client:
    return Client(api_key=ADMIN_KEY, api_url=gw.url + "/")


async def subscribe_to_a_per_second_plan(gw: Running, amount: str) -> None:
    c = lago(gw)
    metric = await asyncio.to_thread(c.billable_metrics.find, "seconds")
    charge = Charge(
        billable_metric_id=metric.lago_id, charge_model="standard", properties={"amount": amount}
    )
    plan = Plan(
        name="Audio",
        code="audio",
        interval="monthly",
        amount_cents=0,
        amount_currency="USD",
        charges=Charges(__root__=[charge]),
    )
    await asyncio.to_thread(c.plans.create, plan)
    subscription = Subscription(
        external_customer_id="acme",
        plan_code="audio",
        external_id="sub_audio",
        billing_time="calendar",
        subscription_at=subscription_start().isoformat(),
    )
    await asyncio.to_thread(c.subscriptions.create, subscription)


async def test_a_whisper_transcription_is_billed_per_second_on_a_plan(gw: Running) -> None:
    await subscribe_to_a_per_second_plan(gw, "0.01")
    async with client(gw) as sdk:
        raw = await sdk.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=("speech.wav", wav(2.5), "audio/wav")
        )
    reply = raw.parse()
    assert reply.text == TRANSCRIPT
    assert reply.usage is not None and reply.usage.type == "duration"
    assert reply.usage.seconds == 3  # 2.5 s, rounded up as OpenAI reports it
    assert Decimal(raw.headers["x-faregate-cost"]) == 3 * PER_SECOND
    assert Decimal(raw.headers["x-faregate-price"]) == Decimal("0.03")  # the plan's 3 x $0.01
    request_id = raw.headers["x-faregate-request-id"]
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        rows = [(e["code"], e["properties"]) for e in await events_of_request(conn, request_id)]
        record = (await conn.execute(select(requests).where(requests.c.id == request_id))).one()
    by_code = {code: props for code, props in rows}
    assert set(by_code) == {"requests", "seconds"}
    seconds = by_code["seconds"]
    assert Decimal(seconds["seconds"]) == 3 and Decimal(seconds["cost"]) == 3 * PER_SECOND
    assert seconds["model"] == "whisper-1" and seconds["provider"] == "openai"
    assert record.kind == "transcriptions" and Decimal(record.seconds) == 3
    assert record.usage_estimated is False
    usage = await asyncio.to_thread(lago(gw).customers.current_usage, "acme", "sub_audio")
    [charge] = usage.charges_usage
    assert Decimal(charge.units) == 3 and charge.amount_cents == 3
    assert usage.amount_cents == 3


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json"])
async def test_every_response_format_comes_back_and_is_metered(gw: Running, fmt: str) -> None:
    async with client(gw) as sdk:
        raw = await sdk.audio.transcriptions.with_raw_response.create(
            model="whisper-1",
            file=("speech.wav", wav(4.2), "audio/wav"),
            response_format=fmt,  # type: ignore[arg-type]
            language="en",
            temperature=0,
        )
    reply = raw.parse()
    if fmt == "verbose_json":
        assert reply.text == TRANSCRIPT and reply.duration == pytest.approx(4.2)
        assert reply.usage is not None and reply.usage.seconds == 5
    elif fmt == "text":
        assert reply == TRANSCRIPT + "\n"
    else:
        assert TRANSCRIPT in reply and "00:00:04" in reply
    assert Decimal(raw.headers["x-faregate-cost"]) == 5 * PER_SECOND
    await gw.services.writer.flush()
    async with gw.services.engine.connect() as conn:
        record = (
            await conn.execute(
                select(requests).where(requests.c.id == raw.headers["x-faregate-request-id"])
            )
        ).one()
    assert Decimal(record.seconds) == 5
    # Subtitles carry no usage report: the seconds come from the WAV header, marked
    # estimated. Text is asked upstream as json, whose report is the host's own.
    assert record.usage_estimated is (fmt in ("srt", "vtt"))


async def test_a_transcription_fails_over_with_the_whole_upload(gw: Running) -> None:
    from faregate.mockprovider.config import MockBehaviour

    gw.mock.config.deployments["openai"] = MockBehaviour(error_rate=1.0)
    async with client(gw) as sdk:
        raw = await sdk.audio.transcriptions.with_raw_response.create(
            model="whisper-failover", file=("speech.wav", wav(1.5), "audio/wav")
        )
    reply = raw.parse()
    assert reply.text == TRANSCRIPT and reply.usage is not None and reply.usage.seconds == 2
    assert raw.headers["x-faregate-attempts"] == "3"
    assert raw.headers["x-faregate-deployment"] == "whisper-failover/compat/2"
    assert Decimal(raw.headers["x-faregate-cost"]) == 2 * PER_SECOND
    assert gw.mock.stats.by_deployment == {"openai": 1, "compat": 1}


async def test_a_wallet_hold_covers_the_audio_and_posts_its_real_price(gw: Running) -> None:
    wallet_id = await _wallet(gw, "0.005")
    async with client(gw) as sdk:
        # 75,000 bytes of compressed audio may last 100 s at the 6 kbit/s floor: $0.01, more
        # than the wallet holds, refused before any upstream call.
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.audio.transcriptions.create(
                model="whisper-1", file=("speech.mp3", b"\xff\xfb" * 37_500, "audio/mpeg")
            )
        assert refused.value.status_code == 402
        assert Decimal(refused.value.response.headers["x-faregate-hold"]) == Decimal("0.01")
        assert gw.mock.stats.requests == 0
        reply = await sdk.audio.transcriptions.create(
            model="whisper-1", file=("speech.wav", wav(7.01), "audio/wav")
        )
    assert reply.text == TRANSCRIPT
    post = finish_of(await _finished(gw, wallet_id))
    assert post["kind"] == "post"
    assert Decimal(post["reserved"]) == 8 * PER_SECOND  # the WAV header's 7.01 s, rounded up
    assert Decimal(post["consumed"]) == 8 * PER_SECOND  # a WAV's hold is exact
    found = await asyncio.to_thread(lago(gw).wallets.find, wallet_id)
    assert Decimal(found.credits_balance) == Decimal("0.005") - 8 * PER_SECOND


async def _post_form(gw: Running, form: aiohttp.FormData) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{gw.url}/v1/audio/transcriptions",
            data=form,
            headers={"Authorization": f"Bearer {gw.key}"},
        ) as r,
    ):
        return r.status, await r.json()


def _form(model: str | None = "whisper-1", audio: Any = None, **fields: str) -> Any:
    form = aiohttp.FormData()
    if model is not None:
        form.add_field("model", model)
    if audio is not None:
        form.add_field("file", audio, filename="speech.wav", content_type="audio/wav")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def test_bad_uploads_get_openai_shaped_errors_naming_the_field(gw: Running) -> None:
    cases = [
        (_form(audio=None), 400, "file"),
        (_form(audio=b""), 400, "file"),
        (_form(model=None, audio=wav(1)), 400, "model"),
        (_form(model="gpt-4o-mini", audio=wav(1)), 400, "model"),  # a chat model
        (_form(model="no-such-model", audio=wav(1)), 404, "model"),
        (_form(audio=wav(1), response_format="mp3"), 400, "response_format"),
        (_form(audio=wav(1), temperature="7"), 400, "temperature"),
        (_form(audio=io.BytesIO(b"\x00" * (MAX_AUDIO_BYTES + 1))), 413, "file"),
    ]
    for form, status, param in cases:
        got, body = await _post_form(gw, form)
        assert (got, body["error"]["param"]) == (status, param), body
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    async with client(gw) as sdk:  # the same through the SDK
        with pytest.raises(openai.NotFoundError) as unknown:
            await sdk.audio.transcriptions.create(model="whisper-9", file=("a.wav", wav(1)))
    assert unknown.value.body["param"] == "model"  # type: ignore[index]
    # A body that says it is multipart and is not (aiohttp's ValueError) was a 500.
    for content_type in ("multipart/form-data; boundary=x", "multipart/form-data"):
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gw.url}/v1/audio/transcriptions",
                data=b"not a form",
                headers={"Authorization": f"Bearer {gw.key}", "Content-Type": content_type},
            ) as r,
        ):
            assert r.status == 400, await r.text()
            error = (await r.json())["error"]
            assert (error["param"], error["code"]) == ("file", "invalid_multipart")
    assert gw.mock.stats.requests == 0


async def test_the_mock_transcribes_under_a_deployment_prefix_and_injects_faults(
    mock: MockServer,
) -> None:
    from faregate.mockprovider.config import MockBehaviour

    mock.config.deployments["flaky"] = MockBehaviour(error_rate=1.0)
    mock.config.deployments["short"] = MockBehaviour(output_tokens=3)
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{mock.url_for('flaky')}/v1/audio/transcriptions", data=_form(audio=wav(1))
        ) as r:
            assert r.status in (500, 503) and (await r.json())["error"]["message"]
        async with s.post(
            f"{mock.url_for('short')}/v1/audio/transcriptions", data=_form(audio=wav(1.2))
        ) as r:
            assert r.status == 200
            assert await r.json() == {
                "text": "".join(word_pieces(3)).strip(),
                "usage": {"type": "duration", "seconds": 2},
            }
        form = _form("gpt-4o-transcribe", wav(2), prompt="names: Ada")
        async with s.post(f"{mock.url}/v1/audio/transcriptions", data=form) as r:
            usage = (await r.json())["usage"]
        assert usage["type"] == "tokens" and usage["input_token_details"]["audio_tokens"] == 20
        async with s.post(f"{mock.url}/v1/audio/transcriptions", data=_form(audio=b"ID3 mp3")) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "file"


async def test_cheapest_prices_a_transcription_by_its_seconds_on_each_deployment(
    tmp_path: Path, mock: MockServer
) -> None:
    per_second = {"mode": "audio_transcription", "effective_from": "2020-01-01"}
    extra = {
        "models": [
            {
                "name": "stt",
                "kind": "transcriptions",
                "strategy": "cheapest",
                "deployments": [  # the dearer one first: order alone would pick it
                    {"id": "dear", "provider": "openai", "model": "whisper-1", "price_key": "dear"},
                    {"id": "cheap", "provider": "compat", "model": "whisper-1", "price_key": "lo"},
                ],
            }
        ],
        "prices": {
            "models": [
                {"provider": "xtest", "model": "dear", "per_second": 0.0003, **per_second},
                {"provider": "xtest", "model": "lo", "per_second": 0.0001, **per_second},
            ]
        },
    }
    gw = await start_gateway(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", mock, extra)
    try:
        form = _form(model="stt", audio=wav(4))
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gw.url}/v1/audio/transcriptions",
                data=form,
                headers={"Authorization": f"Bearer {gw.key}"},
            ) as r,
        ):
            assert r.status == 200, await r.text()
            assert r.headers["x-faregate-deployment"] == "cheap"
            assert Decimal(r.headers["x-faregate-cost"]) == Decimal("0.0004")  # 4 s x 0.0001
        assert mock.stats.requests_for(deployment="openai") == 0
    finally:
        await gw.runner.cleanup()
