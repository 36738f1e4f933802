"""The wallet ledger as values: balanced entries over four accounts, and balances as sums.

Accounts of one wallet (amounts in nanos of the wallet's currency):
  available  spendable credits          held      pending holds of in-flight requests
  consumed   usage paid from the wallet  funding   the outside world's side of top-ups/voids
Every entry's deltas add up to zero, so the ledger as a whole always balances. A hold moves
its amount from available to held; it is finished exactly once, by a `post` (the real amount
goes to consumed, the rest back to available) or a `release` (all of it back), both keyed
`done:<hold id>` so storage refuses a second one. Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

# The wallet_entries columns an entry fills, in the order of `Entry.values`.
COLUMNS = (
    "wallet_id",
    "key",
    "kind",
    "available_nanos",
    "held_nanos",
    "consumed_nanos",
    "funding_nanos",
    "hold_id",
    "transaction_id",
    "created_at",
    "subscription_id",
    "reserved_nanos",
)


# Not frozen, though nothing changes an entry once made: a frozen dataclass's __init__ sets
# each field through object.__setattr__ (three times the cost), and a request makes two.
@dataclass(slots=True)
class Entry:
    wallet_id: str
    key: str
    kind: str  # credit | void | refund | hold | post | release | debit
    available: int = 0
    held: int = 0
    consumed: int = 0
    funding: int = 0
    hold_id: str | None = None
    transaction_id: str | None = None
    created_at: datetime | None = None
    # The subscription whose plan priced a post (None: catalog-priced); an invoice applies
    # only the credits its own subscription consumed.
    subscription_id: str | None = None
    # A finish with its hold folded in (`fold_finished`): what the hold had reserved.
    reserved: int | None = None

    def __post_init__(self) -> None:
        if self.available + self.held + self.consumed + self.funding != 0:
            raise ValueError(f"unbalanced ledger entry {self.key!r}")

    def row(self) -> dict[str, object]:
        """The stored row by column (as the journal keeps it); the same as `values`."""
        return {
            "wallet_id": self.wallet_id,
            "key": self.key,
            "kind": self.kind,
            "available_nanos": self.available,
            "held_nanos": self.held,
            "consumed_nanos": self.consumed,
            "funding_nanos": self.funding,
            "hold_id": self.hold_id,
            "transaction_id": self.transaction_id,
            "created_at": self.created_at or datetime.now(UTC),
            "subscription_id": self.subscription_id,
            "reserved_nanos": self.reserved,
        }

    def values(self, now: datetime) -> tuple[object, ...]:
        """The stored row in COLUMNS order; `now` is the created_at of an entry without one."""
        return (
            self.wallet_id,
            self.key,
            self.kind,
            self.available,
            self.held,
            self.consumed,
            self.funding,
            self.hold_id,
            self.transaction_id,
            self.created_at or now,
            self.subscription_id,
            self.reserved,
        )


def credit(wallet_id: str, transaction_id: str, amount: int) -> Entry:
    """Paid or granted credits flow in from the outside world."""
    _non_negative(amount)
    return Entry(
        wallet_id,
        f"tx:{transaction_id}",
        "credit",
        available=amount,
        funding=-amount,
        transaction_id=transaction_id,
    )


def void(wallet_id: str, transaction_id: str, amount: int) -> Entry:
    """Credits taken back out of the wallet (Lago `voided_credits`)."""
    _non_negative(amount)
    return Entry(
        wallet_id,
        f"tx:{transaction_id}",
        "void",
        available=-amount,
        funding=amount,
        transaction_id=transaction_id,
    )


def hold(wallet_id: str, hold_id: str, amount: int, at: datetime | None = None) -> Entry:
    _non_negative(amount)
    return Entry(
        wallet_id,
        f"hold:{hold_id}",
        "hold",
        available=-amount,
        held=amount,
        hold_id=hold_id,
        created_at=at,
    )


def post(
    wallet_id: str,
    hold_id: str,
    held: int,
    actual: int,
    at: datetime | None = None,
    subscription_id: str | None = None,
) -> Entry:
    """Finish a hold with the real amount: `actual` is consumed, `held - actual` goes back to
    available (negative when the real amount exceeds the hold). A negative `actual` (a volume
    charge crossing into a cheaper tier) credits the wallet back. `subscription_id`: the
    subscription whose plan priced the request."""
    _non_negative(held)
    return Entry(
        wallet_id,
        f"done:{hold_id}",
        "post",
        available=held - actual,
        held=-held,
        consumed=actual,
        hold_id=hold_id,
        created_at=at,
        subscription_id=subscription_id,
    )


def release(wallet_id: str, hold_id: str, held: int) -> Entry:
    _non_negative(held)
    return Entry(
        wallet_id, f"done:{hold_id}", "release", available=held, held=-held, hold_id=hold_id
    )


def refund(wallet_id: str, transaction_id: str, amount: int, subscription_id: str) -> Entry:
    """Credits a subscription's requests consumed above its finalized invoice, given back
    (replicas' real-time debits may run ahead of the invoice; see docs/wallets.md)."""
    _non_negative(amount)
    return Entry(
        wallet_id,
        f"tx:{transaction_id}",
        "refund",
        available=amount,
        funding=-amount,
        transaction_id=transaction_id,
        subscription_id=subscription_id,
    )


def debit(wallet_id: str, key: str, amount: int) -> Entry:
    """Consumption without a hold (negative: a credit back)."""
    return Entry(wallet_id, key, "debit", available=-amount, consumed=amount)


def fold_finished(entries: Sequence[Entry]) -> list[Entry]:
    """The entries to store for a batch: a hold finished in the same batch is folded into
    its finish instead of stored, as a card statement shows a settled authorization only as
    its charge. The finish keeps its key, so the hold is still finished exactly once, and
    moves only what the request consumed: a `post` of the real amount a is available -a,
    consumed +a; a `release` moves nothing. Either keeps the hold's amount as `reserved`. A
    hold still open when its batch is stored is stored as it is, and its finish later. The
    sums are the same either way; the ledger grows by one entry per request, not two."""
    kept: list[Entry | None] = []
    holds: dict[str | None, tuple[int, Entry]] = {}  # hold id -> its place in `kept`, itself
    for entry in entries:
        kind = entry.kind
        if kind == "hold":
            if entry.hold_id not in holds:
                holds[entry.hold_id] = (len(kept), entry)
        elif (kind == "post" or kind == "release") and entry.hold_id in holds:
            at, held = holds.pop(entry.hold_id)
            kept[at] = None
            entry = _folded(held, entry)
        kept.append(entry)
    return [e for e in kept if e is not None]


def fold_into(finish: Entry, held: int) -> Entry:
    """`finish` (a post or release) with its hold of `held` folded in, in place: what
    `fold_finished` would store for the two, without making either again."""
    finish.available -= held
    finish.held += held
    finish.reserved = held
    return finish


def _folded(hold_entry: Entry, finish: Entry) -> Entry:
    """A copy of `finish` with `hold_entry` folded in (the inputs stay as they were)."""
    return fold_into(replace(finish), hold_entry.held)


def _non_negative(amount: int) -> None:
    if amount < 0:
        raise ValueError("amount must not be negative")


@dataclass(frozen=True, slots=True)
class Balances:
    """Sums of a wallet's entries. `balance` = credits not yet consumed (holds included);
    `ongoing` = what a new request can still hold."""

    available: int = 0
    held: int = 0
    consumed: int = 0
    funding: int = 0

    @property
    def funded(self) -> int:
        return -self.funding

    @property
    def balance(self) -> int:
        return self.available + self.held

    @property
    def ongoing(self) -> int:
        return self.available

    def add(self, entry: Entry) -> Balances:
        return Balances(
            self.available + entry.available,
            self.held + entry.held,
            self.consumed + entry.consumed,
            self.funding + entry.funding,
        )


def fold(entries: Iterable[Entry]) -> Balances:
    """Balances from entries, each key counted once (storage keeps the first; so do we)."""
    seen: set[str] = set()
    total = Balances()
    for entry in entries:
        if entry.key not in seen:
            seen.add(entry.key)
            total = total.add(entry)
    return total
