"""`faregate spend --by team,tag --since …`: spend attribution from the request records, as a
table, JSON or CSV. Works on the database directly, so it needs no running server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.cli.common import add_config_args, print_json, with_engine
from faregate.config import Settings
from faregate.metering.spend import DIMENSIONS, SpendReport, make_query, spend_report

FILTERS = tuple(d for d in DIMENSIONS if d != "day")


def _table(report: SpendReport) -> str:
    rendered = report.to_json()
    columns = report.columns
    lines = [[str(c) for c in columns]]
    for row in [*rendered["rows"], {columns[0]: "TOTAL"} | rendered["totals"]]:
        lines.append(["" if row.get(c) is None else str(row.get(c)) for c in columns])
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines
    )


def cmd_spend(args: argparse.Namespace) -> int:
    filters = {d: getattr(args, d) for d in FILTERS if getattr(args, d, None)}
    query = make_query(args.by, args.since, args.until, filters)

    async def run(engine: AsyncEngine, _: Settings) -> SpendReport:
        async with engine.connect() as conn:
            return await spend_report(conn, query)

    report = with_engine(args, run)
    if args.format == "json":
        print_json(report.to_json())
        return 0
    text = report.to_csv() if args.format == "csv" else _table(report) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("spend", help="spend by team, key, tag, model, provider, …")
    add_config_args(p)
    p.add_argument("--by", default="", help=f"comma-separated: {', '.join(DIMENSIONS)}")
    p.add_argument("--since", help="ISO date or time (default: start of this month, UTC)")
    p.add_argument("--until", help="ISO date (inclusive) or time (exclusive); default: now")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--output", "-o", help="write the CSV or table to this file")
    for d in FILTERS:
        p.add_argument(f"--{d.replace('_', '-')}", dest=d, help=f"only this {d}")
    p.set_defaults(func=cmd_spend)
