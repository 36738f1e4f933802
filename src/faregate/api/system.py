"""Liveness, readiness and deployment health."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from faregate.api.common import bearer_key, json_response
from faregate.api.state import SERVICES
from faregate.errors import ServiceUnavailable


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        raise ServiceUnavailable(
            "Database is not reachable.", code="database_unavailable"
        ) from None
    for check in services.components.get("readiness", []):
        await check()
    return json_response({"status": "ready"})


async def deployments_health(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.admin(bearer_key(request))
    rows = services.health.snapshot() if services.health else []
    configured = services.router.deployments() if services.router is not None else {}
    for row in rows:  # what the deployment is, next to how it is doing
        d = configured.get(row["deployment"])
        if d is not None:
            row.update(model=d.group, provider=d.provider, region=d.region, rpm=d.rpm, tpm=d.tpm)
    return json_response({"deployments": rows})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/deployments/health", deployments_health)
