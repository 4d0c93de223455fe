"""The sanitiser every incoming trade, liquidation and candle passes before aggregation/storage (DESIGN §4),
as pure Python.

`check_trade` / `check_liquidation` / `check_candle` return None when the item is accepted, else a reason
code, and count each reason in `counts` (the feed publishes them in FeedStatus.rejected, the dashboard
shows them per feed). Nothing rejected may reach the BarBuilder or the candle store. Trade checks, in this
order (the first that fails names the reason):

- "non_finite":   price or size is NaN/inf, or not a real number at all (a string, None, a bool);
- "non_positive": price or size is zero or negative;
- "bad_side":     the taker side is not "buy"/"sell" (a liquidation's not "long"/"short");
- "bad_time":     the timestamp is not a positive integer of ms (a parser's "unparsable" -1, a float);
- "future":       ts > now_ms + future_tolerance_ms (now_ms is the caller's clock: data time for sim/replay);
- "duplicate_id": a trade id already accepted recently (the last `id_memory` ids; REST fallback and
                  websocket overlap). Checked before "out_of_order": a replayed trade is a duplicate first;
- "out_of_order": ts older than the newest accepted ts minus reorder_tolerance_ms;
- "price_band":   a crossed or absurd print: more than price_band_pct away from the last ACCEPTED trade
                  price. The first trade sets the reference; a rejected price never moves it, except that
                  `reanchor_after` consecutive band rejections mean the market itself moved (no trade near
                  the old price any more): the reference is re-anchored on that trade, which is accepted and
                  counted as "reanchored". So a burst of fewer than `reanchor_after` absurd prints in a row
                  never reaches a bar; a longer one is taken as the new market (and shows on the dashboard).

Liquidations get the value, side and time checks ("out_of_order" against their own stream's clock); no id
and no price band (a forced order's price is the bankruptcy price, legitimately away from the last trade).

Candles (`check_candle`: OHLC bars from a replay or a history download; same rules as
`apps.market.importers.sanitize`, one bar at a time): "non_finite", "non_positive" (a price), "bad_time",
"negative_volume" (volume or taker-buy volume below zero; zero volume is a real quiet bar),
"taker_buy_gt_volume", "high_below_low", "open_close_outside_range", "future" (the bar is not closed yet:
open_time + timeframe > now_ms + future_tolerance_ms), "duplicate_bar" (the open time of the last
accepted bar again), "out_of_order" (older than it) and "price_band" (any of O/H/L/C further than
price_band_pct from the last accepted close, with the same re-anchoring as trades, on its own reference).
Only accepted items update state (newest ts, reference prices, id memory).
"""

import math
import numbers
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

REASONS = ("non_finite", "non_positive", "bad_side", "bad_time", "future", "duplicate_id", "out_of_order",
           "price_band")
CANDLE_REASONS = ("non_finite", "non_positive", "bad_time", "negative_volume", "taker_buy_gt_volume",
                  "high_below_low", "open_close_outside_range", "future", "duplicate_bar", "out_of_order",
                  "price_band")
MINUTE_MS = 60_000


def _real(v: Any) -> float | None:
    """float(v) for a finite real number (numpy scalars included), else None."""
    if type(v) is float:  # the hot path (every trade, twice): skip the ABC checks below
        return v if math.isfinite(v) else None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    x = float(v)
    return x if math.isfinite(x) else None


def _value_reason(*values: Any) -> str | None:
    nums = [_real(v) for v in values]
    if any(x is None for x in nums):
        return "non_finite"
    if any(x <= 0 for x in nums):  # type: ignore[operator]
        return "non_positive"
    return None


def _ts_ok(ts: Any) -> bool:
    if type(ts) is int:  # the hot path
        return ts > 0
    return isinstance(ts, numbers.Integral) and not isinstance(ts, bool) and ts > 0


def _ms(t: Any) -> int | None:
    """A candle's open_time (aware datetime, pandas Timestamp or int ms) -> int ms; None when it is not one."""
    if isinstance(t, datetime):
        return None if t.tzinfo is None else int(t.timestamp() * 1000)  # a naive time has no place in UTC data
    return int(t) if _ts_ok(t) else None


class Sanitiser:
    """Rejects bad trades/liquidations/candles before aggregation (see the module docstring for the rules)."""

    def __init__(
        self,
        price_band_pct: float = 10.0,
        future_tolerance_ms: int = 5_000,
        reorder_tolerance_ms: int = 2_000,
        id_memory: int = 100_000,
        reanchor_after: int = 20,
    ) -> None:
        if not (math.isfinite(price_band_pct) and price_band_pct > 0):
            raise ValueError(f"price_band_pct must be a positive percentage, got {price_band_pct!r}")
        if future_tolerance_ms < 0 or reorder_tolerance_ms < 0:
            raise ValueError(
                f"tolerances must be >= 0 ms, got future={future_tolerance_ms!r} reorder={reorder_tolerance_ms!r}"
            )
        if id_memory < 1:
            raise ValueError(f"id_memory must be >= 1, got {id_memory!r}")
        self.price_band_pct = float(price_band_pct)
        self.future_tolerance_ms = int(future_tolerance_ms)
        self.reorder_tolerance_ms = int(reorder_tolerance_ms)
        self.id_memory = int(id_memory)
        self.reanchor_after = max(1, int(reanchor_after))
        self._band_streak = 0
        self._candle_band_streak = 0
        self.counts: dict[str, int] = {}
        self.ref_price: float | None = None  # last accepted trade price
        self.newest_ts: int | None = None  # newest accepted trade ts
        self.newest_liq_ts: int | None = None
        self.candle_ref: float | None = None  # last accepted candle close
        self.newest_candle_ms: int | None = None  # open time of the newest accepted candle
        self._ids: set[str] = set()
        self._id_order: deque[str] = deque()

    def check_trade(self, trade: Any, now_ms: int) -> str | None:
        """None if `trade` (ts_ms, price, amount, side, id) is accepted, else the reason (also counted)."""
        reason = self._trade_reason(trade, now_ms)
        if reason == "price_band":
            self._band_streak += 1
            if self._band_streak < self.reanchor_after:
                return self._reject(reason)
            self._count("reanchored")
        elif reason:
            return self._reject(reason)
        self._band_streak = 0
        self.ref_price = float(trade.price)
        self.newest_ts = trade.ts_ms if self.newest_ts is None else max(self.newest_ts, trade.ts_ms)
        if trade.id:
            self._remember(str(trade.id))
        return None

    def check_liquidation(self, liq: Any, now_ms: int) -> str | None:
        """None if `liq` (ts_ms, side, price, amount) is accepted, else the reason (also counted)."""
        reason = _value_reason(liq.price, liq.amount)
        if not reason and liq.side not in ("long", "short"):
            reason = "bad_side"
        if not reason and not _ts_ok(liq.ts_ms):
            reason = "bad_time"
        reason = reason or self._time_reason(liq.ts_ms, now_ms, self.newest_liq_ts)
        if reason:
            return self._reject(reason)
        self.newest_liq_ts = liq.ts_ms if self.newest_liq_ts is None else max(self.newest_liq_ts, liq.ts_ms)
        return None

    def check_candle(self, bar: Mapping[str, Any], now_ms: int, timeframe_ms: int = MINUTE_MS) -> str | None:
        """None if the OHLC `bar` (open_time, open, high, low, close, volume[, taker_buy_volume]) is accepted."""
        reason = self._candle_reason(bar, now_ms, timeframe_ms)
        if reason == "price_band":
            self._candle_band_streak += 1
            if self._candle_band_streak < self.reanchor_after:
                return self._reject(reason)
            self._count("reanchored")
        elif reason:
            return self._reject(reason)
        self._candle_band_streak = 0
        self.candle_ref = float(bar["close"])
        self.newest_candle_ms = _ms(bar["open_time"])
        return None

    # -- internals -----------------------------------------------------------------------------------
    def _trade_reason(self, trade: Any, now_ms: int) -> str | None:
        reason = _value_reason(trade.price, trade.amount)
        if reason:
            return reason
        if trade.side not in ("buy", "sell"):
            return "bad_side"
        if not _ts_ok(trade.ts_ms):
            return "bad_time"
        if trade.ts_ms > now_ms + self.future_tolerance_ms:
            return "future"
        if trade.id and str(trade.id) in self._ids:
            return "duplicate_id"
        reason = self._time_reason(trade.ts_ms, now_ms, self.newest_ts)
        if reason:
            return reason
        if self._outside_band(float(trade.price), self.ref_price):
            return "price_band"
        return None

    def _candle_reason(self, bar: Mapping[str, Any], now_ms: int, timeframe_ms: int) -> str | None:
        o, h, lo, c = (_real(bar.get(k)) for k in ("open", "high", "low", "close"))
        vol = _real(bar.get("volume"))
        buy_raw = bar.get("taker_buy_volume")
        unknown = buy_raw is None or _is_nan(buy_raw)  # an OHLCV-only source has no taker split: not bad
        buy = None if unknown else _real(buy_raw)
        if None in (o, h, lo, c, vol) or (not unknown and buy is None):
            return "non_finite"
        if min(o, h, lo, c) <= 0:  # type: ignore[type-var]
            return "non_positive"
        t = _ms(bar.get("open_time"))
        if t is None:
            return "bad_time"
        if vol < 0 or (buy is not None and buy < 0):  # type: ignore[operator]
            return "negative_volume"
        if buy is not None and buy > vol:  # type: ignore[operator]
            return "taker_buy_gt_volume"
        if h < lo:  # type: ignore[operator]
            return "high_below_low"
        if not (lo <= o <= h and lo <= c <= h):  # type: ignore[operator]
            return "open_close_outside_range"
        if t + timeframe_ms > now_ms + self.future_tolerance_ms:
            return "future"
        newest = self.newest_candle_ms
        if newest is not None and t == newest:
            return "duplicate_bar"
        if newest is not None and t < newest:
            return "out_of_order"
        ref = self.candle_ref
        if any(self._outside_band(x, ref) for x in (o, h, lo, c)):  # type: ignore[arg-type]
            return "price_band"
        return None

    def _outside_band(self, price: float, ref: float | None) -> bool:
        return ref is not None and abs(price - ref) > ref * self.price_band_pct / 100.0

    def _time_reason(self, ts_ms: int, now_ms: int, newest: int | None) -> str | None:
        if ts_ms > now_ms + self.future_tolerance_ms:
            return "future"
        if newest is not None and ts_ms < newest - self.reorder_tolerance_ms:
            return "out_of_order"
        return None

    def _remember(self, trade_id: str) -> None:
        if len(self._id_order) >= self.id_memory:
            self._ids.discard(self._id_order.popleft())
        self._id_order.append(trade_id)
        self._ids.add(trade_id)

    def _count(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def _reject(self, reason: str) -> str:
        self._count(reason)
        return reason


def _is_nan(v: Any) -> bool:
    """True for a NaN of any float type: an unknown taker split (OHLCV-only source) is NaN, not bad."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isnan(float(v))
