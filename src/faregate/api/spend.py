"""Spend attribution over HTTP (admin key): `GET /api/v1/spend?by=team,tag&since=…&until=…`,
as JSON or CSV. The report itself lives in metering/spend.py."""

from __future__ import annotations

from aiohttp import web

from faregate.api.common import bearer_key, json_response
from faregate.api.state import SERVICES
from faregate.errors import InvalidRequest
from faregate.metering.spend import DIMENSIONS, make_query, spend_report

FILTERS = tuple(d for d in DIMENSIONS if d != "day")


async def get_spend(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    await services.admin(bearer_key(request))
    q = request.query
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("'format' must be json or csv.", param="format")
    query = make_query(
        q.get("by"),
        q.get("since"),
        q.get("until"),
        {d: q[d] for d in FILTERS if q.get(d)},
    )
    async with services.engine.connect() as conn:
        report = await spend_report(conn, query)
    if fmt == "csv":
        return web.Response(
            text=report.to_csv(),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="spend.csv"'},
        )
    return json_response(report.to_json())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/spend", get_spend)
