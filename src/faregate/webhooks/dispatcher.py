"""Webhooks: a durable outbox delivered in the background, signed the way Lago signs.

`emit()` writes one outbox row per interested endpoint (configured in the YAML or created
through `/api/v1/webhook_endpoints`) and wakes the delivery loop; it never raises. The loop
claims due rows with a conditional UPDATE (so two replicas never post the same row at the
same time), posts them, and records every attempt's outcome on the row: the outbox is the
delivery log. Failed attempts are retried with jittered exponential backoff up to
`max_attempts`; rows still pending when a process stops are delivered after a restart.
Delivery is at least once: receivers dedupe on `X-Lago-Unique-Key`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.config import ConfigError, Settings
from faregate.store.tables.webhooks import webhook_endpoints, webhooks
from faregate.webhooks import event_types, signing

log = logging.getLogger("faregate.webhooks")

_ENDPOINT_CACHE_SECONDS = 30.0
_BATCH = 50
MAX_POSTING = 100  # deliveries posted at once by one replica


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    event_types: frozenset[str] | None = None  # None: every type
    id: str | None = None  # None for endpoints from the configuration file

    def wants(self, webhook_type: str) -> bool:
        return self.event_types is None or webhook_type in self.event_types


# What the signing key is derived from when no secret is configured (see `public_key`).
PUBLIC_SEED = "faregate"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    hmac_key: str
    organization_id: str = "faregate"
    endpoints: tuple[Endpoint, ...] = ()
    max_attempts: int = 8
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    # True when no secret was configured (no webhooks.hmac_key, FAREGATE_SECRET_KEY or admin
    # key): the key is then derived from a public word, and anyone can compute it.
    public_key: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSettings:
        raw = settings.section("webhooks")
        secret = settings.secret_key or settings.admin_key
        key = raw.get("hmac_key") or signing.derived_hmac_key(secret or PUBLIC_SEED)
        endpoints = _configured_endpoints(raw.get("endpoints") or [])
        try:
            return cls(
                hmac_key=str(key),
                organization_id=str(raw.get("organization_id", "faregate")),
                endpoints=tuple(endpoints),
                max_attempts=int(raw.get("max_attempts", 8)),
                retry_base_seconds=float(raw.get("retry_base_seconds", 2.0)),
                retry_max_seconds=float(raw.get("retry_max_seconds", 3600.0)),
                timeout_seconds=float(raw.get("timeout_seconds", 10.0)),
                poll_seconds=float(raw.get("poll_seconds", 1.0)),
                public_key=not (raw.get("hmac_key") or secret),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"webhooks: {exc}") from None


def _configured_endpoints(items: Any) -> list[Endpoint]:
    """The configuration file's endpoints, each a URL or `{url, event_types}`, checked as the
    API checks them: one endpoint per URL, only webhook types that exist (read as Lago reads
    them; `["*"]`, `[]` or none: every type). A mistake is a ConfigError naming it."""
    if not isinstance(items, list):
        raise ConfigError("webhooks.endpoints must be a list")
    endpoints: list[Endpoint] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict) or not _is_http_url(item.get("url")):
            raise ConfigError(f"webhooks.endpoints[{i}] needs an http(s) `url`")
        url = item["url"]
        if url in first:
            raise ConfigError(
                f"webhooks.endpoints[{i}]: {url} is already webhooks.endpoints[{first[url]}]"
                " (one endpoint per URL: list every type it takes in one `event_types`)"
            )
        first[url] = i
        types = item.get("event_types")
        if types is not None and not isinstance(types, list):
            raise ConfigError(f"webhooks.endpoints[{i}].event_types must be a list")
        names = event_types.normalized(types or [])
        if names == [event_types.EVERY]:
            names = []
        unknown = event_types.unknown(names)
        if unknown:
            raise ConfigError(
                f"webhooks.endpoints[{i}].event_types: unknown webhook type(s) "
                f"{', '.join(unknown)} (see src/faregate/webhooks/event_types.py)"
            )
        endpoints.append(Endpoint(url=url, event_types=frozenset(names) if names else None))
    return endpoints


def _is_http_url(value: Any) -> bool:
    return (
        isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) < 2048
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class Webhooks:
    def __init__(self, engine: AsyncEngine, config: WebhookSettings) -> None:
        self.engine = engine
        self.config = config
        self._db_endpoints: tuple[Endpoint, ...] = ()
        self._loaded_at = float("-inf")
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._posting: set[asyncio.Task[None]] = set()  # deliveries being posted
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        )
        await self.reload_endpoints()
        self._task = asyncio.create_task(self._run(), name="faregate-webhooks")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.config.timeout_seconds + 5)
            self._task = None
        if self._posting:  # posts under way end (each within its timeout) or are cut
            await asyncio.wait(set(self._posting), timeout=self.config.timeout_seconds + 5)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- emitting --------------------------------------------------------------------

    async def emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None:
        """Queue `webhook_type` for every interested endpoint. Logged always; never raises."""
        log.info("webhook", extra={"webhook_type": webhook_type, "object_type": object_type})
        try:
            targets = [e for e in await self.endpoints() if e.wants(webhook_type)]
            if not targets:
                return
            body = signing.envelope(webhook_type, object_type, obj, self.config.organization_id)
            text = body.decode()
            now, now_ms = datetime.now(UTC), _now_ms()
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "endpoint_id": target.id,
                    "webhook_url": target.url,
                    "webhook_type": webhook_type,
                    "object_type": object_type,
                    "payload": text,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now_ms,
                    "created_at": now,
                }
                for target in targets
            ]
            async with self.engine.begin() as conn:
                await conn.execute(webhooks.insert(), rows)
            self._wake.set()
        except Exception:
            log.exception("webhook could not be queued", extra={"webhook_type": webhook_type})

    async def endpoints(self) -> tuple[Endpoint, ...]:
        if time.monotonic() - self._loaded_at > _ENDPOINT_CACHE_SECONDS:
            await self.reload_endpoints()
        return self.config.endpoints + self._db_endpoints

    async def reload_endpoints(self) -> None:
        """Re-read endpoints created through the API (called after every change to them)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(webhook_endpoints))).mappings().all()
        self._db_endpoints = tuple(
            Endpoint(
                url=row["webhook_url"],
                event_types=frozenset(row["event_types"]) if row["event_types"] else None,
                id=row["id"],
            )
            for row in rows
        )
        self._loaded_at = time.monotonic()

    # -- delivering ------------------------------------------------------------------

    def backoff_seconds(self, attempts: int) -> float:
        """Wait after the `attempts`-th failure: base * 2^(attempts-1), capped, +-25% jitter."""
        base = min(
            self.config.retry_max_seconds,
            self.config.retry_base_seconds * (2 ** max(0, attempts - 1)),
        )
        return base * random.uniform(0.75, 1.25)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self.deliver_due()
            except Exception:
                log.exception("webhook delivery loop failed; retrying")
            if self._closing:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_seconds)

    async def deliver_due(self) -> int:
        """Claim due rows, as many as free posting slots allow, and post each in a task of its
        own, so a slow or dead receiver holds up its own deliveries and no one else's (the
        loop waited for a whole batch, so one receiver timing out on 8 attempts of 10 s
        delayed every other webhook). A finished post wakes the loop to claim more. Returns
        how many were claimed."""
        claimed_total = 0
        while not self._closing:
            room = MAX_POSTING - len(self._posting)
            if room <= 0:
                break
            claimed = await self._claim(_now_ms(), min(room, _BATCH))
            if not claimed:
                break
            for row in claimed:
                task = asyncio.create_task(self._post_logged(row))
                self._posting.add(task)
                task.add_done_callback(self._posted)
            claimed_total += len(claimed)
        return claimed_total

    def _posted(self, task: asyncio.Task[None]) -> None:
        self._posting.discard(task)
        self._wake.set()  # a slot is free

    async def _post_logged(self, row: dict[str, Any]) -> None:
        try:
            await self._post(row)
        except Exception:  # its lease runs out and it is claimed again
            log.exception("webhook delivery failed", extra={"webhook_type": row["webhook_type"]})

    async def _claim(self, now_ms: int, limit: int = _BATCH) -> list[dict[str, Any]]:
        due = and_(
            webhooks.c.status == "pending",
            webhooks.c.next_attempt_at <= now_ms,
            or_(webhooks.c.claimed_until.is_(None), webhooks.c.claimed_until < now_ms),
        )
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(webhooks)
                        .where(due)
                        .order_by(webhooks.c.next_attempt_at)
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        lease = now_ms + int((self.config.timeout_seconds + 30) * 1000)
        claimed = []
        async with self.engine.begin() as conn:
            for row in rows:
                result = await conn.execute(
                    update(webhooks)
                    .where(and_(webhooks.c.id == row["id"], due))
                    .values(claimed_until=lease)
                )
                if result.rowcount == 1:
                    claimed.append(dict(row))
        return claimed

    async def _post(self, row: dict[str, Any]) -> None:
        if row["endpoint_id"] is not None and not await self._endpoint_exists(row["endpoint_id"]):
            await self._abandon(row, "the webhook endpoint was deleted")
            return
        body = row["payload"].encode()
        headers = signing.headers(self.config.hmac_key, body, row["id"])
        status: int | None = None
        error: str | None = None
        assert self._session is not None
        try:
            async with self._session.post(row["webhook_url"], data=body, headers=headers) as resp:
                status = resp.status
                await resp.read()
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_http_status": status,
            "last_error": error,
            "claimed_until": None,
        }
        if error is None:
            values.update(status="succeeded", delivered_at=datetime.now(UTC))
        elif attempts >= self.config.max_attempts:
            values["status"] = "failed"
            log.warning(
                "webhook delivery gave up",
                extra={"webhook_type": row["webhook_type"], "attempts": attempts, "error": error},
            )
        else:
            values["next_attempt_at"] = _now_ms() + int(self.backoff_seconds(attempts) * 1000)
        async with self.engine.begin() as conn:
            await conn.execute(update(webhooks).where(webhooks.c.id == row["id"]).values(**values))

    async def _endpoint_exists(self, endpoint_id: str) -> bool:
        if any(e.id == endpoint_id for e in await self.endpoints()):
            return True
        await self.reload_endpoints()  # made on another replica since this one last read
        return any(e.id == endpoint_id for e in self._db_endpoints)

    async def _abandon(self, row: dict[str, Any], reason: str) -> None:
        """Give a delivery up without posting it (its endpoint is gone)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(webhooks)
                .where(webhooks.c.id == row["id"])
                .values(status="failed", last_error=reason, claimed_until=None)
            )

    # -- the delivery log --------------------------------------------------------------

    async def deliveries(
        self, *, status: str | None = None, webhook_type: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(webhooks).order_by(webhooks.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(webhooks.c.status == status)
        if webhook_type:
            query = query.where(webhooks.c.webhook_type == webhook_type)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def retry(self, ids: Iterable[str]) -> int:
        """Put failed (or pending) deliveries back in the queue, due now."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(webhooks)
                .where(and_(webhooks.c.id.in_(list(ids)), webhooks.c.status != "succeeded"))
                .values(status="pending", next_attempt_at=_now_ms(), claimed_until=None)
            )
        self._wake.set()
        return int(result.rowcount or 0)
