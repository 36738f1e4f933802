"""Helpers shared by CLI commands: settings, an engine, running a coroutine, printing JSON."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.config import Settings, load_settings
from faregate.store.db import create_engine

T = TypeVar("T")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML configuration file (or FAREGATE_CONFIG)")
    parser.add_argument("--database-url", help="overrides FAREGATE_DATABASE_URL")


def settings_from(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    if getattr(args, "database_url", None):
        settings.database_url = args.database_url
    return settings


def with_engine(args: argparse.Namespace, fn: Callable[[AsyncEngine, Settings], Awaitable[T]]) -> T:
    settings = settings_from(args)

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await fn(engine, settings)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
