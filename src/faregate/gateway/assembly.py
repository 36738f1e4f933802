"""Composition root of the pipeline: builds the price catalog, health, router, counter store
and policy stages from Settings, in-process or on Redis, and hands back a Gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.alerts import Alerts
from faregate.background import PeriodicTask
from faregate.cache import CachePolicy, ResponseCache
from faregate.config import Settings
from faregate.gateway.cache import GatewayCache
from faregate.gateway.call import Call
from faregate.gateway.pipeline import Gateway
from faregate.gateway.policy_stages import (
    BudgetStage,
    EstimateStage,
    ModerationStage,
    RateLimitStage,
)
from faregate.gateway.pricing import CatalogPricer
from faregate.gateway.stages import Stage
from faregate.policy import (
    Budgets,
    Moderator,
    RateLimiter,
    parse_budgets,
    parse_moderation,
    parse_rate_limits,
)
from faregate.pricing import catalog_from_section
from faregate.providers.base import Provider
from faregate.routing.failover import call_with_failover
from faregate.routing.health import HealthRegistry
from faregate.routing.router import Router
from faregate.store.counters import MemoryCounterStore
from faregate.webhooks import Webhooks


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


async def _counter_store(settings: Settings, closers: list[Callable[[], Awaitable[Any]]]) -> Any:
    if not settings.redis_url:
        return MemoryCounterStore(), None
    import redis.asyncio as aioredis

    from faregate.store.counters.redis_store import RedisCounterStore

    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=64)
    client = aioredis.Redis(connection_pool=pool)
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
    health = HealthRegistry(shared=shared)
    await health.start()
    closers.append(health.aclose)
    return health


def _stages(settings: Settings, store: Any, pricer: CatalogPricer, alerts: Alerts) -> list[Stage]:
    stages: list[Stage] = [EstimateStage(pricer)]
    policies = parse_moderation(settings.section("moderation"))
    if policies:
        stages.append(ModerationStage(Moderator(policies, None)))
    stages.append(
        RateLimitStage(RateLimiter(store, parse_rate_limits(settings.raw.get("rate_limits"))))
    )
    budgets = parse_budgets(settings.raw.get("budgets"))
    if budgets:
        stages.append(BudgetStage(Budgets(store, budgets, alerts=alerts)))
    return stages


async def _hold_sweeper(settings: Settings, store: Any, closers: list[Any]) -> PeriodicTask:
    """Releases holds whose process died before settling them (budgets, wallets)."""
    interval = float(settings.section("server").get("hold_sweep_interval_s", 30))
    sweeper = PeriodicTask("hold-sweeper", interval, store.sweep_expired).start()
    closers.append(sweeper.stop)
    return sweeper


async def assemble_gateway(
    settings: Settings,
    *,
    engine: AsyncEngine,
    upstreams: dict[str, Provider],
    webhooks: Webhooks | None = None,
) -> Parts:
    closers: list[Callable[[], Awaitable[Any]]] = []
    pricing = settings.section("pricing")
    pricer = CatalogPricer(
        catalog_from_section(settings.section("prices")),
        markup=Decimal(str(pricing.get("markup", "1"))),
    )
    store, client = await _counter_store(settings, closers)
    health = await _health(settings, client, closers)
    alerts = Alerts(webhooks, store)
    sweeper = await _hold_sweeper(settings, store, closers)
    router = Router(settings.models, health=health, estimator=pricer)
    cache_policy = CachePolicy.from_config(settings.section("cache"))
    cache = GatewayCache(ResponseCache(store), cache_policy) if cache_policy.enabled else None
    gateway = Gateway(
        router=router,
        upstreams=upstreams,
        pricer=pricer,
        meter=_NoMeter(),
        failover=call_with_failover,
        health=health,
        stages=_stages(settings, store, pricer, alerts),
        cache=cache,
        request_timeout=settings.request_timeout,
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
        },
    )
