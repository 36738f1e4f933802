"""A/B experiment reports (admin key): per arm requests, cost, price, latency, errors, tokens.

`GET /api/v1/experiments/{id}` reads the stored request records, so it covers every
replica writing to the database (`?since=` / `?until=` ISO timestamps narrow it);
`?source=live` answers from this process's in-memory statistics instead (no database
read, no writer delay, this replica only, since it started)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from faregate.api.common import bearer_key, json_response
from faregate.api.state import SERVICES, Services
from faregate.errors import InvalidRequest, NotFound
from faregate.metering.experiments import experiment_report, list_experiments


async def _admin(request: web.Request) -> Services:
    services = request.app[SERVICES]
    await services.admin(bearer_key(request))
    return services


def _time(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 timestamp.", param=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _configured(services: Services) -> dict[str, dict[str, Any]]:
    return services.router.experiments()  # type: ignore[no-any-return]


async def list_all(request: web.Request) -> web.Response:
    services = await _admin(request)
    configured = _configured(services)
    async with services.engine.connect() as conn:
        stored = await list_experiments(conn)
    rows = [
        {
            "experiment": name,
            "configured": name in configured,
            "models": configured.get(name, {}).get("models", []),
            "arms": configured.get(name, {}).get("arms", []),
            "stored_requests": stored.get(name, 0),
        }
        for name in sorted(set(configured) | set(stored))
    ]
    return json_response({"experiments": rows})


async def show(request: web.Request) -> web.Response:
    services = await _admin(request)
    name = request.match_info["experiment"]
    configured = _configured(services).get(name)
    source = request.query.get("source", "stored")
    if source == "live":
        report = services.components["observability"].experiments.report(name)
    elif source == "stored":
        async with services.engine.connect() as conn:
            report = await experiment_report(
                conn, name, since=_time(request, "since"), until=_time(request, "until")
            )
    else:
        raise InvalidRequest("'source' must be 'stored' or 'live'.", param="source")
    if configured is None and not report["arms"]:
        raise NotFound(f"Experiment {name!r} is not configured and has no requests.")
    report["source"] = source
    report["configured"] = configured is not None
    if configured is not None:
        report["models"] = configured["models"]
        _add_idle_arms(report, configured["arms"])
    return json_response(report)


def _add_idle_arms(report: dict[str, Any], arms: list[dict[str, str]]) -> None:
    """Configured arms with no traffic yet still appear, with zero counts."""
    seen = {row["arm"] for row in report["arms"]}
    for arm in arms:
        if arm["arm"] not in seen:
            seen.add(arm["arm"])
            report["arms"].append(
                {
                    "arm": arm["arm"],
                    "requests": 0,
                    "errors": 0,
                    "error_rate": 0.0,
                    "cost": "0",
                    "price": "0",
                    "cost_per_request": None,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "latency_p50_ms": None,
                    "latency_p95_ms": None,
                }
            )
    report["arms"].sort(key=lambda row: row["arm"])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/experiments", list_all)
    app.router.add_get("/api/v1/experiments/{experiment}", show)
