"""Admin REST API (JSON, admin key): customers, teams, API keys, provider credentials."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select

from faregate.api.common import bearer_key, json_response, read_json_object
from faregate.api.state import SERVICES, Services
from faregate.auth import repository
from faregate.billing.currencies import is_currency_code
from faregate.errors import Conflict, InvalidRequest, NotFound
from faregate.money import decimal_str, from_nanos, parse_decimal, to_nanos
from faregate.policy.periods import is_timezone
from faregate.store import crypto
from faregate.store.counters.base import MAX_NANOS
from faregate.store.tables.gateway import provider_credentials


async def _admin(request: web.Request) -> Services:
    services = request.app[SERVICES]
    await services.admin(bearer_key(request))
    return services


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def customer_json(row: dict[str, Any]) -> dict[str, Any]:
    limit = row.get("credit_limit_nanos")
    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "name": row.get("name"),
        "email": row.get("email"),
        "currency": row.get("currency"),
        "timezone": row.get("timezone"),
        "credit_limit": None if limit is None else decimal_str(from_nanos(limit)),
        "metadata": row.get("metadata") or {},
        "created_at": _iso(row.get("created_at")),
    }


def key_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "prefix": row["prefix"],
        "name": row.get("name"),
        "customer_id": row.get("customer_id"),
        "team_id": row.get("team_id"),
        "external_subscription_id": row.get("external_subscription_id"),
        "allowed_models": row.get("allowed_models"),
        "tags": row.get("tags") or [],
        "settings": row.get("settings") or {},
        "expires_at": _iso(row.get("expires_at")),
        "revoked_at": _iso(row.get("revoked_at")),
        "created_at": _iso(row.get("created_at")),
    }


def _str(
    body: dict[str, Any], name: str, required: bool = False, limit: int | None = 255
) -> str | None:
    """A non-empty string of at most `limit` characters (its column's size; None: no
    column limits it)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    if limit is not None and len(value) > limit:
        raise InvalidRequest(f"'{name}' must be at most {limit} characters.", param=name)
    return value


def customer_values(body: dict[str, Any], default_currency: str) -> dict[str, Any]:
    """A new customer's row from the admin API's fields (or the command line's), checked:
    a 400 naming the field for what its column or billing could not use."""
    values: dict[str, Any] = {
        "external_id": _str(body, "external_id", required=True),
        "name": _str(body, "name"),
        "email": _str(body, "email"),
        "currency": (_str(body, "currency", limit=3) or default_currency).upper(),
        "timezone": _str(body, "timezone", limit=64) or "UTC",
    }
    if not is_timezone(values["timezone"]):
        raise InvalidRequest("'timezone' must be an IANA time zone.", param="timezone")
    if not is_currency_code(values["currency"]):
        raise InvalidRequest("'currency' must be three letters (ISO 4217).", param="currency")
    if body.get("credit_limit") is not None:
        try:
            nanos = to_nanos(parse_decimal(body["credit_limit"]))
        except (ValueError, ArithmeticError):
            nanos = -1
        if not 0 <= nanos <= MAX_NANOS:  # what a wallet's balance holds
            raise InvalidRequest(
                f"'credit_limit' must be a decimal amount from 0 to {MAX_NANOS // 10**9:,}.",
                param="credit_limit",
            )
        values["credit_limit_nanos"] = nanos
    return values


async def create_customer(request: web.Request) -> web.Response:
    services = await _admin(request)
    values = customer_values(await read_json_object(request), services.settings.currency)
    external_id = values["external_id"]
    async with services.engine.begin() as conn:
        if await repository.customer_by_external_id(conn, external_id) is not None:
            raise Conflict(f"Customer {external_id!r} already exists.", param="external_id")
        row = await repository.insert_customer(conn, values)
    return json_response({"customer": customer_json(row)}, status=201)


async def list_customers(request: web.Request) -> web.Response:
    services = await _admin(request)
    async with services.engine.connect() as conn:
        rows = await repository.list_customers(conn, limit=1000)
    return json_response({"customers": [customer_json(r) for r in rows]})


async def create_team(request: web.Request) -> web.Response:
    services = await _admin(request)
    body = await read_json_object(request)
    name = _str(body, "name", required=True)
    async with services.engine.begin() as conn:
        if await repository.team_by_name(conn, name or "") is not None:
            raise Conflict(f"Team {name!r} already exists.", param="name")
        customer_id = None
        if body.get("customer"):
            customer = await repository.customer_by_external_id(conn, str(body["customer"]))
            if customer is None:
                raise NotFound(f"Customer {body['customer']!r} not found.", param="customer")
            customer_id = customer["id"]
        row = await repository.insert_team(conn, {"name": name, "customer_id": customer_id})
    return json_response(
        {"team": {"id": row["id"], "name": name, "customer_id": customer_id}}, status=201
    )


async def list_teams(request: web.Request) -> web.Response:
    services = await _admin(request)
    async with services.engine.connect() as conn:
        rows = await repository.list_teams(conn)
    return json_response(
        {
            "teams": [
                {"id": r["id"], "name": r["name"], "customer_id": r["customer_id"]} for r in rows
            ]
        }
    )


def _expiry(body: dict[str, Any]) -> datetime | None:
    value = body.get("expires_at")
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidRequest(
            "'expires_at' must be an ISO 8601 timestamp.", param="expires_at"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _string_list(body: dict[str, Any], name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"'{name}' must be an array of strings.", param=name)
    return value


def _settings(body: dict[str, Any]) -> dict[str, Any]:
    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        raise InvalidRequest("'settings' must be an object.", param="settings")
    return settings


async def create_key(request: web.Request) -> web.Response:
    services = await _admin(request)
    body = await read_json_object(request)
    key, row = await services.keys.create_key(
        name=_str(body, "name"),
        customer_external_id=_str(body, "customer"),
        team=_str(body, "team"),
        external_subscription_id=_str(body, "external_subscription_id"),
        allowed_models=_string_list(body, "allowed_models"),
        tags=_string_list(body, "tags"),
        settings=_settings(body),
        expires_at=_expiry(body),
    )
    return json_response({"key": key, "api_key": key_json(row)}, status=201)


async def list_keys(request: web.Request) -> web.Response:
    services = await _admin(request)
    async with services.engine.connect() as conn:
        customer_id = None
        if request.query.get("customer"):
            customer = await repository.customer_by_external_id(conn, request.query["customer"])
            if customer is None:
                raise NotFound("Customer not found.", param="customer")
            customer_id = customer["id"]
        rows = await repository.list_keys(conn, customer_id)
    return json_response({"api_keys": [key_json(r) for r in rows]})


# What PATCH /admin/keys/{id} may change, each read as create_key reads it (null clears it).
_KEY_UPDATES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "name": lambda body: _str(body, "name"),
    "allowed_models": lambda body: _string_list(body, "allowed_models"),
    "tags": lambda body: _string_list(body, "tags"),
    "settings": _settings,
    "expires_at": _expiry,
    "external_subscription_id": lambda body: _str(body, "external_subscription_id"),
}


async def update_key(request: web.Request) -> web.Response:
    services = await _admin(request)
    body = await read_json_object(request)
    for name in body:
        if name not in _KEY_UPDATES:
            raise InvalidRequest(
                f"'{name}' cannot be changed; a key's fields that can: "
                + ", ".join(_KEY_UPDATES)
                + ".",
                param=name,
            )
    changes = {name: read(body) for name, read in _KEY_UPDATES.items() if name in body}
    row = await services.keys.update_key(request.match_info["key_id"], changes)
    return json_response({"api_key": key_json(row)})


async def revoke_key(request: web.Request) -> web.Response:
    services = await _admin(request)
    await services.keys.revoke(request.match_info["key_id"])
    return json_response({"revoked": True})


async def put_credential(request: web.Request) -> web.Response:
    """Store a provider credential encrypted at rest; it is never returned."""
    services = await _admin(request)
    name = request.match_info["provider"]
    if name not in services.settings.providers:
        raise NotFound(f"Provider {name!r} is not configured.", param="provider")
    body = await read_json_object(request)
    secret = _str(body, "api_key", required=True, limit=None) or ""
    ciphertext = crypto.encrypt(services.settings.secret_key, secret)
    async with services.engine.begin() as conn:
        exists = (
            await conn.execute(
                select(provider_credentials.c.provider).where(
                    provider_credentials.c.provider == name
                )
            )
        ).first()
        values = {"ciphertext": ciphertext, "active": True, "created_at": datetime.now(UTC)}
        if exists:
            await conn.execute(
                provider_credentials.update()
                .where(provider_credentials.c.provider == name)
                .values(**values)
            )
        else:
            await conn.execute(provider_credentials.insert().values(provider=name, **values))
    return json_response(
        {
            "provider": name,
            "stored": True,
            "applies": "on restart, where the configuration sets no key",
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/customers", create_customer)
    app.router.add_get("/admin/customers", list_customers)
    app.router.add_post("/admin/teams", create_team)
    app.router.add_get("/admin/teams", list_teams)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_patch("/admin/keys/{key_id}", update_key)
    app.router.add_delete("/admin/keys/{key_id}", revoke_key)
    app.router.add_put("/admin/providers/{provider}/credential", put_credential)
