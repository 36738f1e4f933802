"""The mock's own control surface under `/_mock`: read and zero the counters, read the config,
and replace or drop one deployment's behaviour at runtime. Never counted, never faulted.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from faregate.mockprovider.config import MockBehaviour
from faregate.mockprovider.pipeline import json_response
from faregate.mockprovider.state import STATE


async def get_stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].stats.to_dict())


async def reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.reset()
    return json_response(state.stats.to_dict())


async def get_config(request: web.Request) -> web.Response:
    return json_response(request.app[STATE].config.to_dict())


async def put_deployment(request: web.Request) -> web.Response:
    """Replace a deployment's behaviour; fields the body leaves out come from the default."""
    config = request.app[STATE].config
    try:
        data = orjson.loads(await request.read())
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object of behaviour fields")
        behaviour = MockBehaviour.from_dict(data, base=config.default)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        error = {"message": str(exc), "type": "invalid_request_error", "param": None, "code": None}
        return json_response({"error": error}, status=400)
    config.deployments[request.match_info["name"]] = behaviour
    return json_response(behaviour.to_dict())


async def delete_deployment(request: web.Request) -> web.Response:
    request.app[STATE].config.deployments.pop(request.match_info["name"], None)
    return web.Response(status=204)


def control_routes() -> list[web.RouteDef]:
    return [
        web.get("/_mock/stats", get_stats),
        web.post("/_mock/reset", reset),
        web.get("/_mock/config", get_config),
        web.put("/_mock/deployments/{name}", put_deployment),
        web.delete("/_mock/deployments/{name}", delete_deployment),
    ]
