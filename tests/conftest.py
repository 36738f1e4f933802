"""Shared fixtures: free ports, a private PostgreSQL database per test, a Redis key prefix.

PostgreSQL and Redis are real servers on 127.0.0.1. A test that needs one is skipped when
it is down, unless FAREGATE_REQUIRE_SERVICES=1 (set by `make test`), which fails it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

PG_ADMIN_DSN = os.environ.get("FAREGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FAREGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _service_missing(what: str, exc: BaseException) -> None:
    if os.environ.get("FAREGATE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required but unavailable: {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unused_port() -> int:
    return free_port()


async def create_pg_database() -> str:
    """Create a fresh PostgreSQL database; returns its SQLAlchemy asyncpg URL."""
    import asyncpg

    name = f"fg_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        _service_missing("PostgreSQL", exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


# What `migrated` copies: a database migrated once per session, by dialect (SQLite: its
# file's path; PostgreSQL: its URL).
_TEMPLATES: dict[str, str] = {}


async def migrated(url: str) -> None:
    """`faregate.store.db.migrate(url)`, for a test's new, empty database by copying one
    migrated once per session: the SQLite file, or a PostgreSQL database made with `CREATE
    DATABASE ... TEMPLATE` (in place of the empty one `create_pg_database` made). A migration
    takes ~0.4 s a database here, a copy a few milliseconds. A database that holds anything
    is migrated as it is; the migrations themselves are tested on their own (tests/store)."""
    import asyncpg

    from faregate.store.db import migrate

    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        if path.exists() and path.stat().st_size:
            await asyncio.to_thread(migrate, url)
            return
        template = _TEMPLATES.get("sqlite")
        if template is None:
            folder = Path(tempfile.mkdtemp(prefix="faregate-template-"))
            template = str(folder / "migrated.db")
            await asyncio.to_thread(migrate, f"sqlite+aiosqlite:///{template}")
            _TEMPLATES["sqlite"] = template
        path.parent.mkdir(parents=True, exist_ok=True)  # as the engine does for its file
        shutil.copyfile(template, path)
        return
    name = url.rsplit("/", 1)[1]
    target = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        used = await target.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await target.close()
    if used:
        await asyncio.to_thread(migrate, url)
        return
    template_url = _TEMPLATES.get("postgres")
    if template_url is None:
        template_url = await create_pg_database()
        await asyncio.to_thread(migrate, template_url)
        _TEMPLATES["postgres"] = template_url
    template = template_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()


@pytest.fixture(scope="session", autouse=True)
def _drop_templates() -> Iterator[None]:
    """The session's template databases go with it."""
    yield
    sqlite = _TEMPLATES.pop("sqlite", None)
    if sqlite is not None:
        shutil.rmtree(Path(sqlite).parent, ignore_errors=True)
    postgres = _TEMPLATES.pop("postgres", None)
    if postgres is not None:
        asyncio.run(drop_pg_database(postgres))


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test, as a SQLAlchemy asyncpg URL."""
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """Redis at 127.0.0.1:6379; yields a URL whose keys are cleaned up by `redis_prefix`."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        _service_missing("Redis", exc)
    finally:
        await client.aclose()
    yield REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique key prefix so concurrent test runs never share Redis state."""
    prefix = f"fgtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:
        pass
