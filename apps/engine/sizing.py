"""Position sizing: risk a fixed fraction of equity between entry and stop, capped by notional.

The prototype traded a fixed 0.01 BTC whatever the stop, and its MVP compared the 2 % "risk" limit
with the notional (prototype-notes §6.2). Here the quantity is the one that loses `risk_pct` of equity
if the stop is hit, scaled by the draft's size multiplier, and never more than `max_notional_pct` of
equity in notional (a hard cap: the multiplier does not lift it).

Note for the defaults: 1 % risk over a 0.6 % stop is 167 % of equity in notional, so the 10 % cap binds
for the spike fader unless its stop is wider than 10 %. Fees and slippage are not in the risk budget;
lot-size rounding is the executor's job (it depends on the exchange's market limits). The size is decided
at the signal bar's close and traded at the fill price: `quantity_at_fill` keeps the decided notional.
"""

import math


def position_size(equity: float, entry: float, stop: float, risk_pct: float = 0.01,
                  max_notional_pct: float = 0.10, size_mult: float = 1.0) -> float:
    """Quantity in base units; 0.0 when any input is invalid or the stop distance is not positive.

    risk_pct and max_notional_pct are FRACTIONS of equity (0.01 = 1 %), size_mult a factor (> 0).
    """
    values = (equity, entry, stop, risk_pct, max_notional_pct, size_mult)
    try:
        if not all(math.isfinite(v) and v > 0 for v in values):
            return 0.0
    except TypeError:
        return 0.0
    distance = abs(entry - stop)
    if distance <= 0:
        return 0.0
    by_risk = equity * risk_pct * size_mult / distance
    by_notional = equity * max_notional_pct / entry
    return float(min(by_risk, by_notional))


def quantity_at_fill(quantity: float, entry_ref: float, fill_price: float) -> float:
    """The quantity to trade at `fill_price` for a decision sized at the reference entry `entry_ref`.

    The manager sizes at the signal bar's close (the draft's reference entry), but the order fills at
    the next open plus slippage. The decision's NOTIONAL is kept: qty = quantity x entry_ref / fill_price.
    For risk-based sizing that is also exactly the size at the fill, since the stop is re-anchored on the
    fill at the same percentage distance (the risk in quote currency is unchanged). Backtest, paper and
    live all call this one function, with the same operation order, so their quantities agree to the bit.
    """
    if not (math.isfinite(quantity) and math.isfinite(entry_ref) and math.isfinite(fill_price)
            and entry_ref > 0 and fill_price > 0):
        return 0.0
    return quantity * entry_ref / fill_price
