"""Builds the aiohttp application. Startup opens the database, the HTTP pools, the counter
store and the usage writer and hands them down; cleanup closes them in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.api import (
    admin,
    anthropic,
    audio,
    billing,
    experiments,
    invoices,
    metrics,
    openai,
    spend,
    system,
    usage,
    wallets,
    webhooks,
)
from faregate.api.errors import METRICS, error_middleware
from faregate.api.front import FrontSite
from faregate.api.state import SERVICES, Services
from faregate.auth.service import KeyService
from faregate.billing.defaults import default_metrics, seed_default_metrics
from faregate.billing.invoicing import Invoicing, InvoicingSettings
from faregate.billing.runner import BillingRunner
from faregate.config import ConfigError, Settings
from faregate.gateway.assembly import assemble_gateway
from faregate.metering.recorder import Recorder
from faregate.metering.writer import UsageWriter
from faregate.observability import upstream_gauges
from faregate.providers.registry import build_provider, endpoint_for
from faregate.providers.transport import HttpTransport
from faregate.store import crypto
from faregate.store.db import create_engine, default_flush_s
from faregate.store.tables.gateway import provider_credentials
from faregate.wallets.credits import WalletCredits
from faregate.webhooks import Webhooks, WebhookSettings

log = logging.getLogger("faregate")


def _http_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=512, keepalive_timeout=30, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=True, timeout=aiohttp.ClientTimeout(total=None)
    )


async def _stored_credentials(engine: AsyncEngine, settings: Settings) -> None:
    """Provider keys stored (encrypted) in the database fill in those the YAML leaves unset."""
    async with engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    select(provider_credentials).where(provider_credentials.c.active.is_(True))
                )
            )
            .mappings()
            .all()
        )
    for row in rows:
        provider = settings.providers.get(row["provider"])
        if provider is not None and provider.api_key is None:
            settings.providers[provider.name] = replace(
                provider, api_key=crypto.decrypt(settings.secret_key, row["ciphertext"])
            )


async def _startup(app: web.Application, settings: Settings) -> None:
    """Open and start the server's parts. Each is pushed onto one exit stack as it opens: a
    start-up that fails (a ConfigError found halfway, say) closes what it had opened, in
    reverse, instead of leaving sessions, connections and tasks behind; one that succeeds
    hands the stack to `_cleanup`."""
    webhook_settings = WebhookSettings.from_settings(settings)  # a ConfigError opens nothing
    async with contextlib.AsyncExitStack() as opened:
        engine = create_engine(settings.database_url)
        opened.push_async_callback(engine.dispose)
        await _stored_credentials(engine, settings)
        transport = HttpTransport()  # opens nothing until a request
        for provider in settings.providers.values():
            if provider.max_connections is not None:
                try:
                    transport.limit(provider.base_url, provider.max_connections)
                except ValueError as err:
                    raise ConfigError(f"provider {provider.name!r}: {err}") from None
        session = _http_session()
        opened.push_async_callback(session.close)
        opened.push_async_callback(transport.close)
        upstreams = {
            name: build_provider(endpoint_for(p), session, transport)
            for name, p in settings.providers.items()
        }
        journal_dir = (
            Path(settings.data_dir)
            / "journal"
            / settings.section("server").get("instance", f"{settings.host}-{settings.port}")
        )
        interval = settings.seconds("metering", "flush_interval", default_flush_s(engine))
        hooks = Webhooks(engine, webhook_settings)
        if hooks.config.public_key:
            log.warning(
                "webhooks are signed with a key anyone can compute: no webhooks.hmac_key, "
                "FAREGATE_SECRET_KEY or admin key is set, so receivers cannot trust them"
            )
        await hooks.start()
        opened.push_async_callback(hooks.close)
        writer = UsageWriter(engine, journal_dir, flush_interval=interval)
        await writer.start()
        opened.push_async_callback(writer.close)
        keys = KeyService(engine, settings.admin_key)
        parts = await assemble_gateway(  # closes what it opened if it fails
            settings,
            engine=engine,
            upstreams=upstreams,
            webhooks=hooks,
            unflushed=writer.unflushed_events,
        )
        for closer in parts.components["closers"]:
            opened.push_async_callback(closer)
        recorder = Recorder(writer, parts.subscription_of)
        parts.gateway.meter = parts.components["observability"].meter(recorder)
        invoicing, runner = await _billing(
            settings, engine, parts.components["pricer"], hooks, writer
        )
        opened.push_async_callback(runner.close)
        if parts.components.get("wallets") is not None:
            invoicing.credits = WalletCredits()
        metrics = parts.components["observability"].metrics
        if metrics is not None:
            metrics.add_gauges(lambda: upstream_gauges(transport.pools))
            app[METRICS] = metrics
        app[SERVICES] = Services(
            settings=settings,
            engine=engine,
            keys=keys,
            router=parts.router,
            gateway=parts.gateway,
            writer=writer,
            started_at=int(time.time()),
            webhooks=hooks,
            health=parts.health,
            invoicing=invoicing,
            wallets=parts.components.get("wallets"),
            components={
                "http": session,
                "transport": transport,
                "upstreams": upstreams,
                "billing_runner": runner,
                **parts.components,
                "opened": opened.pop_all(),  # started: closed by `_cleanup`
            },
        )


async def _billing(
    settings: Settings, engine: AsyncEngine, pricer: Any, hooks: Webhooks, writer: UsageWriter
) -> tuple[Invoicing, BillingRunner]:
    """Seed the built-in billable metrics, then start the background billing run."""
    section = settings.section("billing")
    if section.get("default_metrics", True):
        priced = pricer.catalog.keys()  # (provider, model) pairs
        models = {*settings.models, *(model for _, model in priced)}
        await seed_default_metrics(engine, default_metrics(models, settings.providers))
    options = InvoicingSettings.from_section(section)
    invoicing = Invoicing(engine, options, webhooks=hooks, unflushed=writer.unflushed_events)
    runner = BillingRunner(invoicing, options.run_interval)
    runner.start()  # last: nothing after it can fail and leave it running
    return invoicing, runner


async def _cleanup(app: web.Application) -> None:
    """Close what start-up opened, the last opened first: the billing run, the gateway's
    parts, the usage writer (its last flush), the webhooks, the upstream connections and
    the database."""
    await app[SERVICES].components["opened"].aclose()


def build_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)

    async def on_startup(app: web.Application) -> None:
        await _startup(app, settings)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(_cleanup)
    for module in (
        openai,
        audio,
        anthropic,
        admin,
        system,
        billing,
        webhooks,
        invoices,
        experiments,
        metrics,
        spend,
        usage,
        wallets,
    ):
        module.add_routes(app)
    return app


async def start_app(settings: Settings) -> web.AppRunner:
    runner = web.AppRunner(build_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    site = FrontSite(runner, settings.host, settings.port, max_body=settings.max_body_bytes)
    await site.start()
    return runner


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# Young-generation collections every 10,000 container allocations instead of 700.
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Once the app is built: move everything allocated so far (modules, configuration,
    caches) out of the collector's reach, and collect the young generation less often.
    The request path allocates many short-lived containers and makes almost no reference
    cycles, yet with the defaults the collector took 15% of the server's CPU (20% when
    ingesting event batches), most of it full collections walking the frozen-to-be heap;
    tuned, 4%, and 15-20% less CPU per request (measured on 2026-12-02)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve_forever(settings: Settings) -> None:
    runner = await start_app(settings)
    tune_gc()
    log.info("faregate listening", extra={"host": settings.host, "port": settings.port})
    try:
        await _wait_for_signal()
    finally:
        await runner.cleanup()


async def _demo_key(settings: Settings) -> str:
    from faregate.auth import repository

    engine = create_engine(settings.database_url)
    try:
        keys = KeyService(engine, settings.admin_key)
        async with engine.begin() as conn:
            if await repository.customer_by_external_id(conn, "demo") is None:
                await repository.insert_customer(conn, {"external_id": "demo", "name": "Demo"})
        key, _ = await keys.create_key(name="demo", customer_external_id="demo", team="demo")
        return key
    finally:
        await engine.dispose()


def _demo_banner(settings: Settings, key: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    return f"""
faregate is running on {base} (SQLite in {settings.data_dir}, mock provider upstream)

  demo API key : {key}
  admin key    : {settings.admin_key}

curl {base}/v1/chat/completions \\
  -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
  -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

python -c 'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="{key}"); \\
print(c.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)'

Press Ctrl+C to stop.
"""


async def run_demo(settings: Settings, *, mock_port: int) -> None:
    from faregate.mockprovider.server import start_mock

    mock = await start_mock(port=mock_port)
    runner = await start_app(settings)
    tune_gc()
    try:
        key = await _demo_key(settings)
        print(_demo_banner(settings, key), flush=True)
        await _wait_for_signal()
    finally:
        await runner.cleanup()
        await mock.close()
