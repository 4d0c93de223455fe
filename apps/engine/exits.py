"""Exit rules (DESIGN §4, issue 9 "Fill conventions"), the same for backtests (bars), kline replays
(bars) and paper/live trading (trade prints).

The prototype checked stops only on closes and filled at the signal bar's close (prototype-notes
§0.4, §6.4). The rules here, written to follow what an exchange does:

- a signal on bar t enters at the open of bar t+1 plus slippage; stop and target keep their distance
  in percent from the ghost's reference entry and are re-anchored on that fill (`rebase_levels`);
  the quantity is sized from the FILL price (`apps.engine.sizing.quantity_at_fill`: the decision's
  notional is kept, so a fill above the reference buys less);
- a time stop is due when data time since the fill reaches max_hold_s (`due`). On the first bar where
  it is due it fires at that bar's OPEN, before any level, even when that open lies beyond the stop or
  the target (reason "time": the market exit was sent at the open, whatever the open was). On prints
  (paper/live) a due time stop wins too, at that print's price (`tick_check`);
- on bars (`bar_exit`, `bar_check`), a position held since before the bar:
  * an open beyond the stop (a gap) exits at the open (a stop-market order fills at market);
  * an open beyond the target exits at that OPEN, the better price (a resting limit gapped through is
    filled by the first trade, at the open), reason "target";
  * otherwise a bar whose range holds both stop and target exits at the STOP (the order inside the bar is
    unknown, so assume the worse); a high exactly equal to a long's target (low for a short) exits at
    the target;
- on prints (`tick_exit`, `tick_check`): a print at or through the stop exits at that print's price (a
  stop-market order fills at market); a print at or through the target exits at the TARGET. Prints have
  no gap: a resting limit at the target is hit by the trade that first crosses it, at the limit's price,
  so a later print beyond it says nothing better about our fill;
- a trade still open at the end of the data closes at the last close, reason "end_of_data".

Prices returned here are REFERENCE prices; `FillModel.exit_fill` adds slippage for market-type exits
(stop, time) and none for a target (a limit order). `simulate_trade` strings the rules together for one
trade over bars; the backtest walk (`apps.engine.backtest`), the kline replay (`apps.runtime.pipeline`) and
the paper executor (`apps.trading.execution.positions_check_price`) call `bar_check` / `tick_check`, so
there is one implementation of the order of checks.
"""

import dataclasses
import math
from datetime import datetime

import numpy as np
import pandas as pd

from apps.engine.fills import FillModel

STOP = "stop"
TARGET = "target"
TIME = "time"
END_OF_DATA = "end_of_data"


def _level(x: float | None) -> float:
    """None/NaN levels mean "no such order" and never trigger."""
    return np.nan if x is None else float(x)


def tick_exit(side: int, stop: float | None, target: float | None, price: float) -> tuple[float, str] | None:
    """Exit (price, reason) triggered by one trade print at `price` for a position of `side`, or None.

    Stop first: if the levels were ever crossed (stop beyond target) the conservative answer wins.
    """
    stop, target = _level(stop), _level(target)
    if side == 1:
        if price <= stop:
            return price, STOP
        if price >= target:
            return target, TARGET
    elif side == -1:
        if price >= stop:
            return price, STOP
        if price <= target:
            return target, TARGET
    else:
        raise ValueError(f"side must be +1 or -1, got {side!r}")
    return None


def bar_exit(side: int, stop: float | None, target: float | None, open: float, high: float,
             low: float) -> tuple[float, str] | None:
    """Exit (price, reason) inside one bar for a position of `side` held since before the bar, or None.

    Order: a gap through the stop at the open exits at the open; a gap through the target exits at the
    open too (the better price: the resting limit is filled by the first trade); then stop if the range
    reaches it (also when the target is reached too: stop first), then target if the range reaches it
    (equality counts). The time stop is not judged here: see `bar_check`.
    """
    stop, target = _level(stop), _level(target)
    if side == 1:
        if open <= stop:
            return open, STOP
        if open >= target:
            return open, TARGET
        if low <= stop:
            return stop, STOP
        if high >= target:
            return target, TARGET
    elif side == -1:
        if open >= stop:
            return open, STOP
        if open <= target:
            return open, TARGET
        if high >= stop:
            return stop, STOP
        if low <= target:
            return target, TARGET
    else:
        raise ValueError(f"side must be +1 or -1, got {side!r}")
    return None


def bar_check(side: int, stop: float | None, target: float | None, open: float, high: float, low: float, *,
              time_due: bool) -> tuple[float, str] | None:
    """The exit of one bar for a position held since before it: a time stop due on this bar fires at its
    open before any level (reason "time", even when the open lies beyond the stop or the target), else
    `bar_exit`. The order of checks for every bar-driven caller (backtest, kline replay)."""
    if time_due:
        return open, TIME
    return bar_exit(side, stop, target, open, high, low)


def tick_check(side: int, stop: float | None, target: float | None, price: float, *,
               time_due: bool) -> tuple[float, str] | None:
    """The exit on one trade print: a due time stop wins at that print's price, else `tick_exit`."""
    if time_due:
        if side not in (1, -1):
            raise ValueError(f"side must be +1 or -1, got {side!r}")
        return price, TIME
    return tick_exit(side, stop, target, price)


def due(opened_at: datetime | pd.Timestamp, max_hold_s: float | None, now: datetime | pd.Timestamp) -> bool:
    """True when the position opened at `opened_at` has been held max_hold_s seconds of DATA time.

    `now` is the data time of the current bar/trade, never the wall clock (the prototype's time stop
    used `utcnow()` and fired on the next bar or never). None/NaN max_hold_s means no time stop.
    """
    if max_hold_s is None or not math.isfinite(max_hold_s):
        return False
    return (pd.Timestamp(now) - pd.Timestamp(opened_at)).total_seconds() >= max_hold_s


def rebase_levels(entry_ref: float, stop: float, target: float, fill_price: float) -> tuple[float, float]:
    """Move stop and target with the fill: same percentage distance from the fill as from entry_ref.

    The ghost computes levels from the signal bar's close; the trade opens at the next open plus
    slippage, and a 0.6 % stop must stay 0.6 % from where we actually are.
    """
    k = fill_price / entry_ref
    return stop * k, target * k


@dataclasses.dataclass(frozen=True)
class TradeOutcome:
    """One simulated round trip; prices in quote currency, qty in base units, fees and P&L in quote."""

    side: int
    qty: float
    entry_time: pd.Timestamp
    entry_price: float
    stop: float
    target: float
    exit_time: pd.Timestamp
    exit_price: float
    reason: str
    entry_fee: float
    exit_fee: float

    @property
    def gross_pnl(self) -> float:
        return self.side * self.qty * (self.exit_price - self.entry_price)

    @property
    def net_pnl(self) -> float:
        return self.gross_pnl - self.entry_fee - self.exit_fee


def simulate_trade(bars: pd.DataFrame, signal_pos: int, side: int, entry_ref: float, stop: float,
                   target: float, max_hold_s: float | None, fill_model: FillModel,
                   qty: float = 1.0) -> TradeOutcome | None:
    """Follow one draft emitted on bar `signal_pos` of `bars` to its exit, applying every rule above.

    Returns None when there is no bar after the signal (nothing to enter on). Fees are the taker fee
    on the filled entry notional and on the exit notional (the conservative choice; a target filled as
    maker would pay less).
    """
    n = len(bars)
    j0 = signal_pos + 1
    if j0 >= n:
        return None
    opens = bars["open"].to_numpy()
    highs = bars["high"].to_numpy()
    lows = bars["low"].to_numpy()
    closes = bars["close"].to_numpy()
    times = bars.index
    entry = fill_model.entry_fill(side, float(opens[j0]))
    stop_f, target_f = rebase_levels(entry_ref, stop, target, entry)
    entry_time = times[j0]
    exit_ref: float | None = None
    reason = ""
    exit_j = n - 1
    for j in range(j0, n):
        hit = bar_check(side, stop_f, target_f, float(opens[j]), float(highs[j]), float(lows[j]),
                        time_due=j > j0 and due(entry_time, max_hold_s, times[j]))
        if hit:
            exit_ref, reason = hit
            exit_j = j
            break
    if exit_ref is None:
        exit_ref, reason = float(closes[-1]), END_OF_DATA
    exit_price = fill_model.exit_fill(side, exit_ref, reason)
    return TradeOutcome(
        side=side, qty=qty, entry_time=entry_time, entry_price=entry, stop=stop_f, target=target_f,
        exit_time=times[exit_j], exit_price=exit_price, reason=reason,
        entry_fee=fill_model.fee(qty * entry), exit_fee=fill_model.fee(qty * exit_price),
    )
