"""`faregate prices import FILE`: convert LiteLLM's price map into a faregate catalog file."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from faregate.pricing.litellm_import import import_file


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def cmd_import(args: argparse.Namespace) -> int:
    count = import_file(
        Path(args.file),
        Path(args.output) if args.output else None,
        effective_from=args.effective_from,
    )
    print(f"imported {count} models", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    prices = sub.add_parser("prices", help="provider price catalog").add_subparsers(
        dest="action", required=True
    )
    p = prices.add_parser("import", help="read LiteLLM's model_prices_and_context_window.json")
    p.add_argument("file")
    p.add_argument("--output", help="catalog YAML to write (default: stdout)")
    p.add_argument(
        "--effective-from",
        type=_day,
        metavar="YYYY-MM-DD",
        help="the day (UTC) the imported prices apply from (default: today, UTC): LiteLLM's "
        "map carries no dates, so an import dated today does not reprice earlier usage",
    )
    p.set_defaults(func=cmd_import)
