"""WalletStage: before the upstream call, hold the request's worst-case price on the
customer's prepaid wallet (402 `insufficient_credits` when it cannot be covered, before any
upstream call); after it, post the real debit and release the rest, exactly once whatever
happened. Customers without a wallet (pay in arrears) are not held."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from faregate.errors import InsufficientCredits
from faregate.gateway.call import Call
from faregate.money import to_nanos
from faregate.wallets.runtime import Account, WalletRuntime


class Debits(Protocol):
    """Real-time debits: the amounts a call adds to the customer's period fees."""

    async def worst_case(self, call: Call) -> Decimal | None: ...

    async def debit(self, call: Call) -> Decimal | None: ...


class WalletStage:
    name = "wallet"

    def __init__(self, runtime: WalletRuntime, debits: Debits | None = None) -> None:
        self._runtime = runtime
        self._debits = debits

    async def before(self, call: Call) -> None:
        account = await self._runtime.account_of(call.principal.external_customer_id)
        if account is None:
            return
        worst = call.est_price or Decimal(0)
        if self._debits is not None:
            worst = max(worst, await self._debits.worst_case(call) or Decimal(0))
        amount = max(0, to_nanos(worst))
        if not await self._runtime.hold(account, call.request_id, amount):
            raise InsufficientCredits(
                "The prepaid wallet does not cover this request's worst-case price.",
                headers={"x-faregate-hold": format(worst, "f")},
            )
        call.scratch["wallet"] = (account, amount)

    async def after(self, call: Call) -> None:
        held: tuple[Account, int] | None = call.scratch.get("wallet")
        if held is None:
            return
        account, amount = held
        actual: int | None = None
        if call.usage is not None or call.price:
            debit: Any = await self._debits.debit(call) if self._debits is not None else None
            actual = to_nanos(call.price if debit is None else debit)
        await self._runtime.finish(account, call.request_id, amount, actual, at=call.created_at)
