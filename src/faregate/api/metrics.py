"""`GET /metrics` in the Prometheus text format. Needs the admin key or `metrics.token` as a
Bearer token, unless `metrics.public: true` (for a scraper on a private network)."""

from __future__ import annotations

import hmac

from aiohttp import web

from faregate.api.common import bearer_key
from faregate.api.state import SERVICES
from faregate.errors import NotFound
from faregate.observability.metrics import CONTENT_TYPE


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    obs = services.components["observability"]
    if obs.metrics is None:
        raise NotFound("Metrics are disabled (metrics.enabled: false).")
    if not obs.metrics_public:
        key = bearer_key(request)
        token = obs.metrics_token
        if not (token and key and hmac.compare_digest(key, token)):
            await services.admin(key)
    body = obs.metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
