"""The sanitiser every incoming trade and liquidation passes before aggregation (DESIGN §4), as pure Python.

`check_trade` / `check_liquidation` return None when the item is accepted, else a reason code, and count
each reason in `counts` (the feed publishes them in FeedStatus.rejected). Nothing rejected may reach the
BarBuilder. Checks, in this order (the first that fails names the reason):

- "non_finite":   price or size is NaN/inf (or not a number at all);
- "non_positive": price or size is zero or negative;
- "future":       ts > now_ms + future_tolerance_ms (now_ms is the caller's clock: data time for the sim);
- "duplicate_id": a trade id already accepted recently (the last `id_memory` ids; REST fallback and
                  websocket overlap). Checked before "out_of_order": a replayed trade is a duplicate first;
- "out_of_order": ts older than the newest accepted ts minus reorder_tolerance_ms;
- "price_band":   more than price_band_pct away from the last ACCEPTED trade price. The first trade sets the
                  reference; a rejected price never moves it, except that `reanchor_after` consecutive
                  band rejections mean the market itself moved (no trade near the old price any more): the
                  reference is re-anchored on that trade, which is accepted and counted as "reanchored".

Liquidations get the first three checks and "out_of_order" against their own stream's clock; no id and no
price band (a forced order's price is the bankruptcy price, legitimately away from the last trade).
Only accepted items update state (newest ts, reference price, id memory).
"""

import math
from collections import deque
from typing import Any

REASONS = ("non_finite", "non_positive", "future", "duplicate_id", "out_of_order", "price_band")


def _value_reason(*values: Any) -> str | None:
    nums = []
    for v in values:
        if isinstance(v, bool):
            return "non_finite"
        try:
            x = float(v)
        except (TypeError, ValueError):
            return "non_finite"
        if not math.isfinite(x):
            return "non_finite"
        nums.append(x)
    if any(x <= 0 for x in nums):
        return "non_positive"
    return None


class Sanitiser:
    """Rejects bad trades/liquidations before the BarBuilder (see the module docstring for the rules)."""

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
        self.counts: dict[str, int] = {}
        self.ref_price: float | None = None  # last accepted trade price
        self.newest_ts: int | None = None  # newest accepted trade ts
        self.newest_liq_ts: int | None = None
        self._ids: set[str] = set()
        self._id_order: deque[str] = deque()

    def check_trade(self, trade: Any, now_ms: int) -> str | None:
        """None if `trade` (ts_ms, price, amount, id) is accepted, else the reason (also counted)."""
        reason = self._trade_reason(trade, now_ms)
        if reason == "price_band":
            self._band_streak += 1
            if self._band_streak < self.reanchor_after:
                return self._reject(reason)
            self.counts["reanchored"] = self.counts.get("reanchored", 0) + 1
        elif reason:
            return self._reject(reason)
        self._band_streak = 0
        price = float(trade.price)
        self.ref_price = price
        self.newest_ts = trade.ts_ms if self.newest_ts is None else max(self.newest_ts, trade.ts_ms)
        if trade.id:
            self._remember(str(trade.id))
        return None

    def check_liquidation(self, liq: Any, now_ms: int) -> str | None:
        """None if `liq` (ts_ms, price, amount) is accepted, else the reason (also counted)."""
        reason = _value_reason(liq.price, liq.amount) or self._time_reason(liq.ts_ms, now_ms, self.newest_liq_ts)
        if reason:
            return self._reject(reason)
        self.newest_liq_ts = liq.ts_ms if self.newest_liq_ts is None else max(self.newest_liq_ts, liq.ts_ms)
        return None

    # -- internals -----------------------------------------------------------------------------------
    def _trade_reason(self, trade: Any, now_ms: int) -> str | None:
        reason = _value_reason(trade.price, trade.amount)
        if reason:
            return reason
        if trade.ts_ms > now_ms + self.future_tolerance_ms:
            return "future"
        if trade.id and str(trade.id) in self._ids:
            return "duplicate_id"
        reason = self._time_reason(trade.ts_ms, now_ms, self.newest_ts)
        if reason:
            return reason
        ref = self.ref_price
        if ref is not None and abs(float(trade.price) - ref) > ref * self.price_band_pct / 100.0:
            return "price_band"
        return None

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

    def _reject(self, reason: str) -> str:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        return reason
