"""Trades (and liquidations) -> closed 1-minute bars, as pure Python (no Django: the feed task owns I/O).

Each bar carries what the ghosts need beyond OHLCV (DESIGN §4-5): taker-buy and taker-sell volume (exact,
from each trade's taker side, so CVD never needs a coin flip), the trade count, "whale" volume (trades
whose notional is at least `whale_notional`, per taker side) and liquidated volume per side.

Rules, stated once:
- A bar covers [minute, minute + 60 s) of trade time (exchange timestamps, UTC); it is emitted when a
  trade of a LATER minute arrives (`add_trade`) or when the caller's clock has passed its end (`flush`,
  for a quiet market). A minute with no trades produces no bar: there is no price to put in it, and an
  invented flat bar would look like real data to a ghost. Downstream, a missing minute is a gap.
- A trade older than the current bar's minute is counted in `late_trades` and ignored (the bar it
  belongs to is already out; a grace period is a later issue). A trade with a non-finite or
  non-positive price/amount, or a side other than "buy"/"sell", is counted in `rejected` and ignored;
  a repeated trade id within the current minute is counted in `duplicates` and ignored (REST fallback
  and websocket can overlap).
- Volumes are base units (BTC for BTC/USDT). Liquidated volume is `liq_long_volume` (longs forced to
  sell) and `liq_short_volume`; they are 0.0 when the venue has a liquidation feed
  (`has_liquidations=True`) and NaN otherwise, so a ghost can tell "none happened" from "not known".
  A liquidation for a minute that never gets a bar (no trades) is counted in `orphan_liquidations`.
"""

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

MINUTE_MS = 60_000


@dataclasses.dataclass(frozen=True, slots=True)
class Trade:
    """One public trade: ts_ms exchange time (ms since epoch, UTC); side is the TAKER side."""

    ts_ms: int
    price: float
    amount: float
    side: str  # "buy" | "sell"
    id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Liquidation:
    """One forced order: side is the side that was LIQUIDATED ("long" = a long was forced to sell)."""

    ts_ms: int
    side: str  # "long" | "short"
    price: float
    amount: float


def _open_time(minute_ms: int) -> datetime:
    return datetime.fromtimestamp(minute_ms / 1000, tz=UTC)


@dataclasses.dataclass
class _Bar:
    minute_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    buy: float = 0.0
    sell: float = 0.0
    trades: int = 0
    whale_buy: float = 0.0
    whale_sell: float = 0.0
    liq_long: float = 0.0
    liq_short: float = 0.0
    ids: set[str] = dataclasses.field(default_factory=set)


class BarBuilder:
    """Aggregates one instrument's trades into 1-minute bars (see the module docstring for the rules)."""

    def __init__(self, whale_notional: float = 100_000.0, has_liquidations: bool = False) -> None:
        ok = isinstance(whale_notional, int | float) and math.isfinite(whale_notional) and whale_notional > 0
        if not ok:
            raise ValueError(
                f"whale_notional must be a positive number of quote units, got {whale_notional!r}"
            )
        self.whale_notional = float(whale_notional)
        self.has_liquidations = bool(has_liquidations)
        self.late_trades = 0
        self.duplicates = 0
        self.late_liquidations = 0
        self.orphan_liquidations = 0
        self.rejected: dict[str, int] = {}
        self._bar: _Bar | None = None
        self._pending_liqs: dict[int, list[Liquidation]] = {}  # liquidations ahead of the current bar

    # -- input ---------------------------------------------------------------------------------------
    def add_trade(self, trade: Trade) -> list[dict[str, Any]]:
        """Add one trade; returns the bars it closed (0 or 1 dicts keyed open_time + BAR_COLUMNS)."""
        reason = self._invalid(trade)
        if reason:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            return []
        minute = trade.ts_ms // MINUTE_MS * MINUTE_MS
        closed: list[dict[str, Any]] = []
        bar = self._bar
        if bar is not None and minute < bar.minute_ms:
            self.late_trades += 1
            return []
        if bar is not None and minute > bar.minute_ms:
            closed.append(self._close())
            bar = None
        if bar is None:
            bar = self._bar = _Bar(minute, trade.price, trade.price, trade.price, trade.price)
            self._attach_pending(minute)
        if trade.id:
            if trade.id in bar.ids:
                self.duplicates += 1
                return closed
            bar.ids.add(trade.id)
        bar.high = max(bar.high, trade.price)
        bar.low = min(bar.low, trade.price)
        bar.close = trade.price
        bar.volume += trade.amount
        bar.trades += 1
        whale = trade.price * trade.amount >= self.whale_notional
        if trade.side == "buy":
            bar.buy += trade.amount
            if whale:
                bar.whale_buy += trade.amount
        else:
            bar.sell += trade.amount
            if whale:
                bar.whale_sell += trade.amount
        return closed

    def add_liquidation(self, liq: Liquidation) -> None:
        """Add one liquidation to the bar of its minute (held until that bar starts if it is ahead)."""
        if liq.side not in ("long", "short") or not (math.isfinite(liq.amount) and liq.amount > 0):
            self.rejected["bad_liquidation"] = self.rejected.get("bad_liquidation", 0) + 1
            return
        minute = liq.ts_ms // MINUTE_MS * MINUTE_MS
        bar = self._bar
        if bar is not None and minute == bar.minute_ms:
            self._apply_liq(bar, liq)
        elif bar is not None and minute < bar.minute_ms:
            self.late_liquidations += 1
        else:
            self._pending_liqs.setdefault(minute, []).append(liq)

    def flush(self, now_ms: int) -> list[dict[str, Any]]:
        """Close the current bar if `now_ms` (the caller's clock, data time) is past its minute."""
        if self._bar is not None and now_ms >= self._bar.minute_ms + MINUTE_MS:
            return [self._close()]
        return []

    def snapshot(self) -> dict[str, Any] | None:
        """The bar in progress (not closed), for live ticks to the browser; None when there is none."""
        return self._as_dict(self._bar) if self._bar is not None else None

    # -- internals -----------------------------------------------------------------------------------
    @staticmethod
    def _invalid(trade: Trade) -> str | None:
        if not (isinstance(trade.price, int | float) and math.isfinite(trade.price) and trade.price > 0):
            return "bad_price"
        if not (isinstance(trade.amount, int | float) and math.isfinite(trade.amount) and trade.amount > 0):
            return "bad_amount"
        if trade.side not in ("buy", "sell"):
            return "bad_side"
        return None

    @staticmethod
    def _apply_liq(bar: _Bar, liq: Liquidation) -> None:
        if liq.side == "long":
            bar.liq_long += liq.amount
        else:
            bar.liq_short += liq.amount

    def _attach_pending(self, minute: int) -> None:
        for m in [m for m in self._pending_liqs if m <= minute]:
            liqs = self._pending_liqs.pop(m)
            if m == minute:
                for liq in liqs:
                    self._apply_liq(self._bar, liq)  # type: ignore[arg-type]
            else:
                self.orphan_liquidations += len(liqs)

    def _close(self) -> dict[str, Any]:
        assert self._bar is not None
        out = self._as_dict(self._bar)
        self._bar = None
        return out

    def _as_dict(self, bar: _Bar) -> dict[str, Any]:
        nan = float("nan")
        return {
            "open_time": _open_time(bar.minute_ms),
            "open": bar.open,
            "high": bar.high,
            "low": bar.low,
            "close": bar.close,
            "volume": bar.volume,
            "taker_buy_volume": bar.buy,
            "taker_sell_volume": bar.sell,
            "trades": bar.trades,
            "whale_buy_volume": bar.whale_buy,
            "whale_sell_volume": bar.whale_sell,
            "liq_long_volume": bar.liq_long if self.has_liquidations else nan,
            "liq_short_volume": bar.liq_short if self.has_liquidations else nan,
        }
