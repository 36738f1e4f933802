"""The one command line: serve, migrate, demo, mock-provider, keys, customers, wallets, …

Each command group lives in its own module and registers itself on the parser here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from faregate.cli import admin, billing, experiments, pricing, serve, spend, wallets, webhooks
from faregate.errors import FaregateError

_GROUPS = [serve, admin, pricing, webhooks, experiments, spend, billing, wallets]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faregate", description="AI gateway with billing inside.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in _GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FaregateError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    except OSError as err:  # an output path that cannot be written, a database out of reach
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
