"""An exchange's lot rules, pure: round an order to the market's amount step and price tick, refuse what is below
its minimum quantity or minimum notional, with words an operator can act on (issue 11).

The desk sizes in BASE units (apps.engine.sizing) and keeps positions in base units (the ledger's P&L is
(exit - entry) x quantity). Exchanges count orders in their own unit: base units on spot, CONTRACTS on contract
markets, where one contract is `contract_size` base units (linear, e.g. 0.001 BTC) or `contract_size` quote
units (inverse, e.g. 100 USD on Binance COIN-M). So:

- amount (order unit) = base quantity on spot; / contract_size on linear contracts; x price / contract_size on
  inverse ones;
- the amount is rounded DOWN to the step (never trade more than the risk check allowed), then compared with the
  minimum amount, and its notional (amount x contract_size x price; amount x contract_size for inverse, already
  in quote units) with the minimum notional;
- the base quantity traded is the rounded amount converted back (exact for spot and linear; for an inverse
  contract it is the contracts' worth in base at the entry price, qty = N x size / entry, and then the ledger's
  linear formula (exit - entry) x qty equals the contracts' P&L in the base coin, N x size x (1/entry - 1/exit),
  valued in quote units at the exit price).

A rule that is not known (None) is neither rounded to nor enforced: an instrument whose market was never looked
up trades as it did before these rules existed.
"""

from __future__ import annotations

import dataclasses
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

QTY_STEP = Decimal("0.00000001")  # the ledger's quantity column (qty_field) rounds finer; 1e-8 is every venue's floor


@dataclasses.dataclass(frozen=True)
class LotRules:
    """One market's order rules; amounts in the order unit (base units or contracts), notional in quote units."""

    label: str = ""  # "BTC/USDT on binance", for the refusal's words
    quote: str = ""
    amount_step: Decimal | None = None
    price_tick: Decimal | None = None
    min_amount: Decimal | None = None
    min_notional: Decimal | None = None
    contract_size: Decimal = Decimal(1)
    contract: bool = False  # a swap or future: amounts count contracts
    inverse: bool = False

    @property
    def unit(self) -> str:
        return " contracts" if self.contract else ""


@dataclasses.dataclass(frozen=True)
class Lot:
    """ok: `quantity` base units (1e-8 grid) and `amount` in the order unit; refused: `detail` says why."""

    ok: bool
    quantity: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)
    detail: str = ""


def num(x: Decimal | float) -> str:
    """A number as an operator reads it: 0.00001, not 1E-5 or 1.0000000000000001e-05."""
    d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
    return format(d.normalize(), "f")


def _dec(x: float | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(repr(float(x)))


def to_amount(quantity: Decimal, price: Decimal, rules: LotRules) -> Decimal:
    """Base units -> the order unit."""
    if not rules.contract:
        return quantity
    if rules.inverse:
        return quantity * price / rules.contract_size
    return quantity / rules.contract_size


def to_quantity(amount: Decimal, price: Decimal, rules: LotRules) -> Decimal:
    """The order unit -> base units, on the ledger's 1e-8 grid (down: never more than the amount holds)."""
    if not rules.contract:
        q = amount
    elif rules.inverse:
        q = amount * rules.contract_size / price
    else:
        q = amount * rules.contract_size
    return q.quantize(QTY_STEP, rounding=ROUND_DOWN)


def notional(amount: Decimal, price: Decimal, rules: LotRules) -> Decimal:
    """Quote units of an order of `amount` (order unit) at `price`."""
    if rules.contract and rules.inverse:
        return amount * rules.contract_size
    return amount * (rules.contract_size if rules.contract else 1) * price


def round_down(x: Decimal, step: Decimal | None) -> Decimal:
    if step is None or step <= 0:
        return x
    return (x / step).to_integral_value(rounding=ROUND_DOWN) * step


def lot_size(quantity: float | Decimal, price: float | Decimal, rules: LotRules) -> Lot:
    """The order for `quantity` base units at `price` under the market's rules, or the refusal."""
    qty, px = _dec(quantity), _dec(price)
    where = f" of {rules.label}" if rules.label else ""
    if not (qty.is_finite() and px.is_finite() and qty > 0 and px > 0):
        return Lot(False, detail=f"quantity {num(qty)} at price {num(px)} cannot be traded")
    raw = to_amount(qty, px, rules)
    if rules.min_amount and raw < rules.min_amount:
        return Lot(False, detail=f"quantity {num(_sig(raw))}{rules.unit} below the minimum "
                                 f"{num(rules.min_amount)}{rules.unit}{where}")
    amount = round_down(raw, rules.amount_step)
    if amount <= 0:
        return Lot(False, detail=f"quantity {num(_sig(raw))}{rules.unit} rounds down to 0 at the amount step "
                                 f"{num(rules.amount_step or 0)}{where}")
    if rules.min_amount and amount < rules.min_amount:
        return Lot(False, detail=f"quantity {num(amount)}{rules.unit} (rounded down to the step "
                                 f"{num(rules.amount_step or 0)}) below the minimum {num(rules.min_amount)}"
                                 f"{rules.unit}{where}")
    cost = notional(amount, px, rules)
    if rules.min_notional and cost < rules.min_notional:
        ccy = f" {rules.quote}" if rules.quote else ""
        return Lot(False, detail=f"notional {cost.quantize(Decimal('0.01'))}{ccy} below the minimum "
                                 f"{num(rules.min_notional)}{ccy}{where}")
    base = to_quantity(amount, px, rules)
    if base <= 0:
        return Lot(False, detail=f"quantity {num(amount)}{rules.unit} is below the ledger's 0.00000001{where}")
    return Lot(True, quantity=base, amount=amount)


def _sig(x: Decimal) -> Decimal:
    """At most 8 significant digits for the words (a raw size is a float's full expansion)."""
    if x == 0:
        return x
    places = 8 - x.adjusted() - 1
    return x.quantize(Decimal(1).scaleb(-max(places, 0)), rounding=ROUND_DOWN) if places > 0 else x


def price_round(price: float | Decimal, rules: LotRules, *, away_from: float | Decimal | None = None) -> Decimal:
    """A price on the market's tick grid, unchanged when the tick is unknown. The nearest tick (a fill), or with
    `away_from` the tick on the far side of the price from that reference: a stop rounded away from the entry is
    never tighter than decided, and on a coarse tick never lands on the entry itself."""
    px = _dec(price)
    tick = rules.price_tick
    if tick is None or tick <= 0 or not px.is_finite():
        return px
    rounding = ROUND_HALF_EVEN
    if away_from is not None:
        rounding = ROUND_CEILING if px > _dec(away_from) else ROUND_FLOOR
    out = (px / tick).to_integral_value(rounding=rounding) * tick
    return out if out > 0 else tick
