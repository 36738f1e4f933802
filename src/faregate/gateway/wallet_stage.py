"""WalletStage: before the upstream call, hold the request's worst-case price on the
customer's first prepaid wallet, by priority, that covers it (402 `insufficient_credits` when
none does, before any upstream call); after it, post the real price and release the rest,
exactly once whatever happened. Customers without a wallet (pay in arrears) are not held.

The price is the call's customer price: on a plan, the marginal fee the request adds to its
subscription's period (gateway/plan_pricing.py), so the debits of a period telescope to the
invoice, and the post names that subscription (its invoice applies the credits); otherwise
provider cost x markup. The worst case is `call.est_price`, which covers
both (images: n x size x quality x steps)."""

from __future__ import annotations

from decimal import Decimal

from faregate.errors import InsufficientCredits
from faregate.gateway.call import Call
from faregate.gateway.plan_pricing import PRICED_BY
from faregate.money import to_nanos
from faregate.wallets.runtime import Account, WalletRuntime


class WalletStage:
    name = "wallet"

    def __init__(self, runtime: WalletRuntime) -> None:
        self._runtime = runtime

    async def before(self, call: Call) -> None:
        accounts = await self._runtime.accounts_of(call.principal.external_customer_id)
        if not accounts:
            return
        worst = call.est_price or Decimal(0)
        amount = to_nanos(worst)
        if amount < 0:
            amount = 0
        account = await self._runtime.hold_first(accounts, call.request_id, amount)
        if account is None:
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
        # No usage and no price: nothing was consumed (an error before any output); release.
        actual = to_nanos(call.price) if call.usage is not None or call.price else None
        await self._runtime.finish(
            account,
            call.request_id,
            amount,
            actual,
            at=call.created_at,
            subscription_id=call.scratch.get(PRICED_BY),
        )
