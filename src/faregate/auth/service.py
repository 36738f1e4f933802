"""Key issuing and request authentication with a short-lived cache: after warm-up a
request costs no database query, and a revocation is seen within `ttl` seconds.

An entry is read again in the background once it is half that old, while requests go on
with it; a request waits for the read only when its entry is older than `ttl` (a key not
used for that long). Under load a read on SQLite's connection thread takes 0.1-0.3 s to
come back, and every request of the key used to wait that long once a second."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faregate.auth import keys, repository
from faregate.auth.errors import (
    ExpiredKey,
    InvalidKey,
    MissingKey,
    RevokedKey,
    UnusableKeySettings,
)
from faregate.auth.principal import Principal, check_settings, unusable_settings
from faregate.errors import Conflict, InvalidRequest, NotFound

log = logging.getLogger("faregate.auth")

REVOCATION_TTL = 1.0  # seconds a cached key may be served before it is read again
REFRESH_AT = 0.5  # share of the TTL after which an entry is read again in the background


def _principal(row: dict[str, Any]) -> Principal:
    allowed = row.get("allowed_models")
    settings = row.get("settings") or {}
    return Principal(
        key_id=row["id"],
        key_prefix=row["prefix"],
        customer_id=row.get("customer_id"),
        external_customer_id=row.get("external_customer_id"),
        team_id=row.get("team_id"),
        team_name=row.get("team_name"),
        # The subscription the key names, else its customer's active one.
        external_subscription_id=row.get("external_subscription_id")
        or row.get("customer_subscription_id"),
        allowed_models=frozenset(allowed) if allowed else None,
        tags=tuple(row.get("tags") or ()),
        settings=dict(settings) if isinstance(settings, dict) else {},
        expires_at=_aware(row.get("expires_at")),
        revoked=row.get("revoked_at") is not None,
        unusable=(
            unusable_settings(settings)
            if isinstance(settings, dict)
            else "'settings' must be an object."
        ),
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def _check_subscription_owner(
    conn: AsyncConnection, external_subscription_id: str, customer_id: str
) -> None:
    """A key may name a subscription not created yet, but never another customer's."""
    found = await repository.subscription_owner(conn, external_subscription_id)
    if found is not None and found != customer_id:
        raise InvalidRequest(
            f"Subscription {external_subscription_id!r} belongs to another customer.",
            param="external_subscription_id",
            code="subscription_of_another_customer",
        )


class KeyService:
    def __init__(self, engine: AsyncEngine, admin_key: str | None, ttl: float = REVOCATION_TTL):
        self._engine = engine
        self._admin_key = admin_key
        self._ttl = ttl
        # prefix -> (principal or None, key hash, fetched at)
        self._cache: dict[str, tuple[Principal | None, str, float]] = {}
        # One database read per prefix at a time: when an entry expires under load, the
        # requests that find it stale share the read instead of each making their own.
        self._loading: dict[str, asyncio.Future[tuple[Principal | None, str, float]]] = {}
        self._generation = 0  # bumped by invalidate: a read begun before is not cached
        # prefix -> (key hash, the key last proved against it): see `_proves`.
        self._proved: dict[str, tuple[str, str]] = {}

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise MissingKey("Missing API key: send it as 'Authorization: Bearer <key>'.")
        if self._admin_key and keys.hmac.compare_digest(key, self._admin_key):
            return Principal(key_id="admin", key_prefix="admin", is_admin=True)
        prefix = keys.parse_prefix(key)
        if prefix is None:
            raise InvalidKey("Incorrect API key provided.")
        entry = self._cache.get(prefix)
        now = time.monotonic()
        if entry is None or now - entry[2] > self._ttl:
            entry = await asyncio.shield(self._loading_of(prefix, now))
        elif now - entry[2] > self._ttl * REFRESH_AT and prefix not in self._loading:
            self._loading_of(prefix, now)  # read again meanwhile; this request goes on
        principal, key_hash, _ = entry
        if principal is None or not self._proves(prefix, key, key_hash):
            raise InvalidKey("Incorrect API key provided.")
        if principal.revoked:
            raise RevokedKey("This API key has been revoked.")
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise ExpiredKey("This API key has expired.")
        if principal.unusable is not None:
            raise UnusableKeySettings(
                f"This API key's settings cannot be used: {principal.unusable} An admin can "
                f"correct them with PATCH /admin/keys/{principal.key_id}."
            )
        return principal

    def _proves(self, prefix: str, key: str, key_hash: str) -> bool:
        """Whether `key` is the key `key_hash` was made of. The key last proved for a prefix
        is remembered with the hash it proved: the next request of that key is compared with
        it in constant time instead of being hashed (SHA-256 and its hex digest, ~1.3% of a
        chat request's CPU). Any other key, or a hash read anew that differs, is hashed."""
        proved = self._proved.get(prefix)
        if (
            proved is not None
            and proved[0] == key_hash
            and key.isascii()  # compare_digest takes text only in ASCII
            and keys.hmac.compare_digest(proved[1], key)
        ):
            return True
        if not keys.verify(key, key_hash):
            return False
        self._proved[prefix] = (key_hash, key)
        return True

    def _loading_of(
        self, prefix: str, now: float
    ) -> asyncio.Future[tuple[Principal | None, str, float]]:
        """The read of `prefix` under way, else a new one: requests share it."""
        loading = self._loading.get(prefix)
        if loading is None:
            loading = asyncio.ensure_future(self._load(prefix, now))
            self._loading[prefix] = loading
            loading.add_done_callback(lambda done: self._forget_load(prefix, done))
        return loading

    def _forget_load(self, prefix: str, done: asyncio.Future[Any]) -> None:
        if self._loading.get(prefix) is done:
            del self._loading[prefix]
        error = None if done.cancelled() else done.exception()
        if error is not None:
            # Retrieved here: a background read has no caller to raise it to. The cached
            # entry stays until the next read; a request past the TTL gets the error.
            log.warning("API key read failed", extra={"error": type(error).__name__})

    async def _load(self, prefix: str, now: float) -> tuple[Principal | None, str, float]:
        generation = self._generation
        async with self._engine.connect() as conn:
            row = await repository.key_by_prefix(conn, prefix)
        entry = (_principal(row), row["key_hash"], now) if row else (None, "", now)
        if generation != self._generation:
            return entry
        if len(self._cache) > 100_000:
            self._cache.clear()
            self._proved.clear()
        self._cache[prefix] = entry
        return entry

    def invalidate(self, prefix: str | None = None) -> None:
        self._generation += 1
        if prefix is None:
            self._cache.clear()
            self._loading.clear()
            self._proved.clear()
        else:
            self._cache.pop(prefix, None)
            self._loading.pop(prefix, None)  # later requests read afresh
            self._proved.pop(prefix, None)

    async def create_key(
        self,
        *,
        name: str | None = None,
        customer_external_id: str | None = None,
        team: str | None = None,
        external_subscription_id: str | None = None,
        allowed_models: list[str] | None = None,
        tags: list[str] | None = None,
        settings: dict[str, Any] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Create a key; returns (the key, shown once; the stored row without its hash)."""
        check_settings(settings or {})
        key, prefix, key_hash = keys.generate_key()
        async with self._engine.begin() as conn:
            customer_id = team_id = None
            if customer_external_id:
                customer = await repository.customer_by_external_id(conn, customer_external_id)
                if customer is None:
                    raise NotFound(
                        f"Customer {customer_external_id!r} not found.",
                        param="customer",
                        code="customer_not_found",
                    )
                customer_id = customer["id"]
            if external_subscription_id and customer_id:
                await _check_subscription_owner(conn, external_subscription_id, customer_id)
            if team:
                found = await repository.team_by_name(conn, team)
                if found is None:
                    found = await repository.insert_team(
                        conn, {"name": team, "customer_id": customer_id}
                    )
                team_id = found["id"]
            if expires_at is not None and expires_at.tzinfo is None:
                raise InvalidRequest("expires_at must carry a time zone.", param="expires_at")
            row = await repository.insert_key(
                conn,
                {
                    "prefix": prefix,
                    "key_hash": key_hash,
                    "name": name,
                    "customer_id": customer_id,
                    "team_id": team_id,
                    "external_subscription_id": external_subscription_id,
                    "allowed_models": allowed_models,
                    "tags": tags or [],
                    "settings": settings or {},
                    "expires_at": expires_at,
                },
            )
        row.pop("key_hash")
        return key, row

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a key's `name`, `allowed_models`, `tags`, `settings`, `expires_at` or
        `external_subscription_id` (only those in `changes`; None clears one). Seen by this
        replica's next request, by the others within the revocation TTL. Returns the row
        without its hash."""
        values = dict(changes)
        if "settings" in values:
            values["settings"] = values["settings"] or {}
            check_settings(values["settings"])
        if "tags" in values:
            values["tags"] = values["tags"] or []
        expires_at = values.get("expires_at")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidRequest("expires_at must carry a time zone.", param="expires_at")
        async with self._engine.begin() as conn:
            row = await repository.key_by_id(conn, key_id)
            if row is None:
                raise NotFound(f"API key {key_id!r} not found.", code="key_not_found")
            if row.get("revoked_at") is not None:
                raise Conflict(f"API key {key_id!r} is revoked.", code="key_revoked")
            subscription = values.get("external_subscription_id")
            if subscription and row.get("customer_id"):
                await _check_subscription_owner(conn, subscription, row["customer_id"])
            if values:
                await repository.update_key(conn, key_id, values)
        self.invalidate(row["prefix"])
        row.update(values)
        row.pop("key_hash")
        return row

    async def revoke(self, key_id: str) -> None:
        async with self._engine.begin() as conn:
            row = await repository.key_by_id(conn, key_id)
            if row is None:
                raise NotFound(f"API key {key_id!r} not found.", code="key_not_found")
            await repository.revoke_key(conn, key_id)
        self.invalidate(row["prefix"])
