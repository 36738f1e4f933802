"""A request's wallet hold as the ledger API shows it, whichever way it was stored: folded
into its finish (the hold was finished in the batch that stored it: nearly every request)
or as a `hold` entry and then its finish (the request was in flight when a batch was
stored). Either way its `post` or `release` says what the hold reserved."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def finish_of(entries: list[dict[str, Any]], hold_id: str | None = None) -> dict[str, Any]:
    """The one post or release of `hold_id` (of the only hold when None), checked against
    its hold entry when there is one."""
    [end] = [
        e for e in entries if e["kind"] in ("post", "release") and hold_id in (None, e["hold_id"])
    ]
    reserved = Decimal(end["reserved"])
    holds = [e for e in entries if e["kind"] == "hold" and e["hold_id"] == end["hold_id"]]
    if holds:
        [hold] = holds
        assert Decimal(hold["held"]) == reserved and Decimal(end["held"]) == -reserved
    else:
        assert Decimal(end["held"]) == 0
    # Either way, what the request consumed is what left `available` for good.
    assert Decimal(end["available"]) + Decimal(end["held"]) == -Decimal(end["consumed"])
    return end


def finishes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every post and release, each checked as `finish_of` checks one."""
    return [finish_of(entries, e["hold_id"]) for e in entries if e["kind"] in ("post", "release")]
