"""Composition root of the pipeline: builds the price catalog, health, router, counter store
and policy stages from Settings, in-process or on Redis, and hands back a Gateway."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.alerts import Alerts
from faregate.background import PeriodicTask
from faregate.cache import CachePolicy, ResponseCache
from faregate.config import ConfigError, Settings
from faregate.gateway.cache import GatewayCache
from faregate.gateway.call import Call
from faregate.gateway.moderation import UpstreamModeration
from faregate.gateway.pipeline import Gateway
from faregate.gateway.plan_pricing import (
    CHECK_S,
    PlanPricer,
    PlanPrices,
    PlanPriceStage,
    Unflushed,
)
from faregate.gateway.policy_stages import (
    BudgetStage,
    EstimateStage,
    ModerationStage,
    RateLimitStage,
)
from faregate.gateway.pricing import CatalogPricer
from faregate.gateway.stages import Stage
from faregate.gateway.wallet_stage import WalletStage
from faregate.metering.anomaly import AnomalyConfig, SpendMonitor
from faregate.observability import build_observability
from faregate.policy import (
    Budgets,
    Moderator,
    RateLimiter,
    parse_budgets,
    parse_moderation,
    parse_rate_limits,
    provider_options,
)
from faregate.pricing import catalog_from_section
from faregate.providers.base import Provider
from faregate.routing.breaker import BreakerPolicy
from faregate.routing.failover import call_with_failover
from faregate.routing.health import HealthRegistry
from faregate.routing.limits import DeploymentLimits
from faregate.routing.router import Router
from faregate.store.counters import MemoryCounterStore
from faregate.wallets.assembly import build_wallets
from faregate.webhooks import Webhooks

log = logging.getLogger("faregate.gateway")


@dataclass
class Parts:
    gateway: Gateway
    router: Router
    health: HealthRegistry
    subscription_of: Callable[[Call], str | None]
    components: dict[str, Any] = field(default_factory=dict)


class _NoMeter:
    def record(self, call: Call) -> None:
        return None


def per_process_controls(settings: Settings) -> list[str]:
    """The configured controls whose counters each process keeps alone when several replicas
    share PostgreSQL without Redis; empty when they are shared or there is nothing to share.
    Limits set on keys themselves (`settings.limits`) are per process too, but live in the
    database and are not known at startup."""
    if settings.redis_url or not settings.database_url.startswith("postgresql"):
        return []
    controls = []
    if parse_rate_limits(settings.raw.get("rate_limits")).rules:
        controls.append("rate_limits")
    if parse_budgets(settings.raw.get("budgets")):
        controls.append("budgets")
    if CachePolicy.from_config(settings.section("cache")).enabled:
        controls.append("cache")
    return controls


def warn_if_per_process(settings: Settings) -> None:
    """Several replicas on one PostgreSQL database without Redis would each enforce a whole
    limit or budget: say so once at startup instead of letting it pass silently."""
    controls = per_process_controls(settings)
    if controls:
        log.warning(
            "PostgreSQL without Redis: %s counted per process, so each replica allows a "
            "whole limit, spends a whole budget and keeps its own cache; set "
            "FAREGATE_REDIS_URL to share them across replicas",
            ", ".join(controls),
            extra={"per_process": controls, "shared_with": "FAREGATE_REDIS_URL"},
        )


async def _counter_store(settings: Settings, closers: list[Callable[[], Awaitable[Any]]]) -> Any:
    if not settings.redis_url:
        warn_if_per_process(settings)
        cache = CachePolicy.from_config(settings.section("cache"))
        store = MemoryCounterStore(
            cache_max_entries=cache.max_entries, cache_max_bytes=cache.max_bytes
        )
        return store, None
    import redis.asyncio as aioredis

    from faregate.store.counters.redis_store import RedisCounterStore
    from faregate.store.redis_client import PipelinedRedis

    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=64)
    client = PipelinedRedis(connection_pool=pool)
    closers.append(pool.disconnect)
    closers.append(client.aclose)
    prefix = str(settings.section("server").get("redis_prefix", "fg:"))
    return RedisCounterStore(client, prefix=prefix), client


async def _health(settings: Settings, client: Any, closers: list[Any]) -> HealthRegistry:
    shared = None
    if client is not None:
        from faregate.routing.health_redis import RedisSharedHealth

        shared = RedisSharedHealth(
            client, str(settings.section("server").get("redis_prefix", "fg:"))
        )
    health = HealthRegistry(breaker_policy(settings), shared=shared)
    await health.start()
    closers.append(health.aclose)
    return health


def _moderator(
    settings: Settings, router: Router, upstreams: dict[str, Provider]
) -> Moderator | None:
    section = settings.section("moderation")
    policies = parse_moderation(section)
    if not policies:
        return None
    model, block_on_error = provider_options(section)
    provider = UpstreamModeration(router.resolve(model), upstreams) if model else None
    return Moderator(policies, provider, block_on_provider_error=block_on_error)


def _stages(
    settings: Settings,
    store: Any,
    pricer: Any,
    alerts: Alerts,
    moderator: Moderator | None,
    wallets: Any = None,
    metrics: Any = None,
) -> list[Stage]:
    stages: list[Stage] = [EstimateStage(pricer)]
    if moderator is not None:
        on_match = metrics.moderation_match if metrics is not None else None
        stages.append(ModerationStage(moderator, on_match))
    stages.append(
        RateLimitStage(RateLimiter(store, parse_rate_limits(settings.raw.get("rate_limits"))))
    )
    budgets = parse_budgets(settings.raw.get("budgets"))
    if budgets:
        stages.append(BudgetStage(Budgets(store, budgets, alerts=alerts)))
    if wallets is not None:
        stages.append(WalletStage(wallets))
    return stages


def _spend_monitor(
    settings: Settings, engine: AsyncEngine, alerts: Alerts, closers: list[Any]
) -> PeriodicTask | None:
    """Raises `spend.anomaly` alerts from the request records, off the request path."""
    config = AnomalyConfig.parse(settings.section("alerts").get("spend_anomaly"))
    if config is None:
        return None
    monitor = SpendMonitor(engine, alerts, config)
    task = PeriodicTask("spend-anomaly", config.interval_s, monitor.check).start()
    closers.append(task.stop)
    return task


async def _hold_sweeper(settings: Settings, store: Any, closers: list[Any]) -> PeriodicTask:
    """Releases holds whose process died before settling them (budgets, wallets)."""
    interval = settings.seconds("server", "hold_sweep_interval_s", 30)
    sweeper = PeriodicTask("hold-sweeper", interval, store.sweep_expired).start()
    closers.append(sweeper.stop)
    return sweeper


def _failover(settings: Settings, store: Any) -> Callable[..., Awaitable[Any]]:
    """call_with_failover, counting deployments' rpm / tpm in `store` when any declares one."""
    deployments = (d for g in settings.models.values() for d in g.deployments)
    if not any(d.rpm is not None or d.tpm is not None for d in deployments):
        return call_with_failover
    return functools.partial(call_with_failover, limits=DeploymentLimits(store))


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """`routing.breaker` in the configuration; unset fields keep BreakerPolicy's defaults."""
    raw = settings.section("routing").get("breaker") or {}
    known = set(BreakerPolicy.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"routing.breaker: unknown settings {sorted(unknown)}")
    return BreakerPolicy(**{k: type(getattr(BreakerPolicy(), k))(v) for k, v in raw.items()})


async def assemble_gateway(
    settings: Settings,
    *,
    engine: AsyncEngine,
    upstreams: dict[str, Provider],
    webhooks: Webhooks | None = None,
    unflushed: Unflushed | None = None,
) -> Parts:
    """The gateway and its parts; `components["closers"]` close what they opened. One that
    fails halfway (a ConfigError in a later section, say) closes what it had opened."""
    closers: list[Callable[[], Awaitable[Any]]] = []
    try:
        return await _assemble(settings, engine, upstreams, webhooks, unflushed, closers)
    except BaseException:
        for closer in reversed(closers):
            with contextlib.suppress(Exception):
                await closer()
        raise


async def _assemble(
    settings: Settings,
    engine: AsyncEngine,
    upstreams: dict[str, Provider],
    webhooks: Webhooks | None,
    unflushed: Unflushed | None,
    closers: list[Callable[[], Awaitable[Any]]],
) -> Parts:
    pricing = settings.section("pricing")
    pricer = CatalogPricer(
        catalog_from_section(settings.section("prices")),
        markup=Decimal(str(pricing.get("markup", "1"))),
    )
    store, client = await _counter_store(settings, closers)
    health = await _health(settings, client, closers)
    alerts = Alerts(webhooks, store)
    sweeper = await _hold_sweeper(settings, store, closers)
    spend_monitor = _spend_monitor(settings, engine, alerts, closers)
    router = Router(settings.models, health=health, estimator=pricer)
    pricer.reach = router.reachable  # worst cases cover fallbacks and tiered targets
    pricer.adapter_caps = {  # adapters that always send a max_tokens bound the output
        name: int(cap)
        for name, provider in upstreams.items()
        if (cap := getattr(provider, "default_max_tokens", None))
    }
    observability = build_observability(settings, health, router, alerts)
    closers.append(observability.alerts.aclose)
    wallets = await build_wallets(settings, engine, client, webhooks, alerts)
    if wallets is not None:
        closers.append(wallets.close)
    moderator = _moderator(settings, router, upstreams)
    gateway_pricer: Any = pricer
    plan_stage: list[Stage] = []
    if settings.section("billing").get("plan_prices", True):
        check_s = settings.seconds("billing", "plan_check_s", CHECK_S)
        plan_prices = PlanPrices(engine, settings.currency, unflushed, check_s=check_s)
        gateway_pricer = PlanPricer(pricer, plan_prices)
        plan_stage.append(PlanPriceStage(plan_prices))
    stages = plan_stage + _stages(
        settings, store, gateway_pricer, alerts, moderator, wallets, observability.metrics
    )
    stages.append(observability.in_flight)  # last: counts the holds the stages above took
    cache_policy = CachePolicy.from_config(settings.section("cache"))
    cache = GatewayCache(ResponseCache(store), cache_policy) if cache_policy.enabled else None
    gateway = Gateway(
        router=router,
        upstreams=upstreams,
        pricer=gateway_pricer,
        meter=_NoMeter(),
        failover=_failover(settings, store),
        health=health,
        stages=stages,
        cache=cache,
        request_timeout=settings.request_timeout,
        max_attempts=int(settings.section("routing").get("max_attempts", 5)),
    )
    return Parts(
        gateway=gateway,
        router=router,
        health=health,
        subscription_of=lambda call: call.principal.external_subscription_id,
        components={
            "closers": closers,
            "counters": store,
            "pricer": pricer,
            "webhooks": webhooks,
            "alerts": alerts,
            "hold_sweeper": sweeper,
            "spend_monitor": spend_monitor,
            "moderator": moderator,
            "observability": observability,
            "wallets": wallets,
        },
    )
