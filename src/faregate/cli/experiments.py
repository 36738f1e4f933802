"""`faregate experiments list | show ID`: A/B experiment reports from the stored request
records, read from the database like the other admin commands (no running server needed)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.cli.common import add_config_args, print_json, with_engine
from faregate.config import Settings
from faregate.errors import NotFound
from faregate.metering.experiments import experiment_report, list_experiments


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_list(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> dict[str, int]:
        async with engine.connect() as conn:
            return await list_experiments(conn)

    stored = with_engine(args, run)
    print_json(
        {
            "experiments": [
                {"experiment": k, "stored_requests": v} for k, v in sorted(stored.items())
            ]
        }
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    async def run(engine: AsyncEngine, _: Settings) -> dict[str, Any]:
        async with engine.connect() as conn:
            return await experiment_report(
                conn, args.experiment, since=_when(args.since), until=_when(args.until)
            )

    report = with_engine(args, run)
    if not report["arms"]:
        raise NotFound(f"experiment {args.experiment!r} has no recorded requests")
    print_json(report)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    experiments = sub.add_parser("experiments", help="A/B experiment reports").add_subparsers(
        dest="action", required=True
    )
    p = experiments.add_parser("list")
    add_config_args(p)
    p.set_defaults(func=cmd_list)
    p = experiments.add_parser("show")
    add_config_args(p)
    p.add_argument("experiment")
    p.add_argument("--since", help="ISO 8601 timestamp (inclusive)")
    p.add_argument("--until", help="ISO 8601 timestamp (exclusive)")
    p.set_defaults(func=cmd_show)
