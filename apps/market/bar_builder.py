"""Trades (and liquidations) -> closed 1-minute bars, as pure Python (no Django: the feed task owns I/O).

Each bar carries what the ghosts need beyond OHLCV (DESIGN §4-5): taker-buy and taker-sell volume (exact,
from each trade's taker side, so CVD never needs a coin flip), the trade count, "whale" volume per taker
side (see the whale rule below) and liquidated volume per side.

Rules, stated once:
- A bar covers [minute, minute + 60 s) of trade time (exchange timestamps, UTC). The builder's clock is
  the newest trade time it has seen, or the caller's clock passed to `flush` (data time for sim/replay,
  exchange-synchronised wall time live), whichever is later.
- Grace period (`grace_ms`, default 2 s of DATA time): the bar of minute m is emitted only once the clock
  has passed m + 60 s + grace. Until then a trade for minute m, even one arriving after trades of minute
  m+1 (websocket and REST fallback interleave, exchanges publish slightly out of order), still goes into
  its own bar: the bar is amended before anyone sees it, so a stored bar is final and storing stays
  idempotent. A trade whose minute's grace has already passed is "late": counted in `late_trades`,
  logged, and ignored (its bar is out; rewriting stored history would change what a ghost already acted
  on). The cost is that every bar reaches the ghosts `grace_ms` after its minute ends. Keep grace_ms >=
  the sanitiser's reorder tolerance, so nothing the sanitiser accepts is late.
- A minute with no trades produces no bar: there is no price to put in it, and an invented flat bar would
  look like real data to a ghost. Downstream, a missing minute is a gap.
- A trade with a non-finite or non-positive price/amount, or a side other than "buy"/"sell", is counted in
  `rejected` and ignored (the sanitiser in front should already have dropped it); a repeated trade id
  within its bar is counted in `duplicates` and ignored.
- Whale rule (per instrument): a trade is a whale print when its notional price * amount (quote units)
  reaches `whale_notional` AND, when `whale_median_multiple` > 0, its amount is also at least that
  multiple of the rolling median amount of the previous `whale_median_window` accepted trades (the trade
  itself is not in its own median, so a burst of whales cannot raise its own bar). While fewer than
  `whale_median_min_trades` trades have been seen the median part does not apply (notional alone decides):
  a median of a handful of trades says nothing. The median is kept in a sorted list updated by bisection:
  O(log N) comparisons plus one C-level memmove of at most N floats per trade, ~0.2 µs at N = 1,000.
- Volumes are base units (BTC for BTC/USDT). Liquidated volume is `liq_long_volume` (longs forced to
  sell) and `liq_short_volume`; they are 0.0 when the venue has a liquidation feed
  (`has_liquidations=True`) and NaN otherwise, so a ghost can tell "none happened" from "not known".
  A liquidation whose minute is past its grace is counted in `late_liquidations`; one for a minute that
  never gets a bar (no trades) is counted in `orphan_liquidations`.
"""

import bisect
import dataclasses
import logging
import math
from collections import deque
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
DEFAULT_GRACE_MS = 2_000  # >= the sanitiser's default reorder tolerance (2 s), see the module docstring
DEFAULT_MEDIAN_WINDOW = 1_000  # trades: minutes of a busy BTC market, enough for a stable median


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


@dataclasses.dataclass(slots=True)
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
    first_ts: int = 0  # open = price of the earliest trade, close = of the newest: a graced trade may
    last_ts: int = 0  # arrive after later ones, and the bar must read as if it had come in order
    ids: set[str] = dataclasses.field(default_factory=set)


class RollingMedian:
    """Median of the last `window` values: a FIFO plus a sorted copy kept by bisection (see module docstring)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 values, got {window!r}")
        self.window = int(window)
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def add(self, x: float) -> None:
        if len(self._fifo) >= self.window:
            old = self._fifo.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._fifo.append(x)
        bisect.insort(self._sorted, x)

    def median(self) -> float:
        s, n = self._sorted, len(self._sorted)
        if n == 0:
            return math.nan
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _positive(x: Any) -> bool:
    if type(x) is float:  # the hot path
        return 0.0 < x < math.inf
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0


class BarBuilder:
    """Aggregates one instrument's trades into 1-minute bars (see the module docstring for the rules)."""

    def __init__(
        self,
        whale_notional: float = 100_000.0,
        has_liquidations: bool = False,
        *,
        whale_median_multiple: float = 0.0,
        whale_median_window: int = DEFAULT_MEDIAN_WINDOW,
        whale_median_min_trades: int | None = None,
        grace_ms: int = DEFAULT_GRACE_MS,
    ) -> None:
        if not _positive(whale_notional):
            raise ValueError(f"whale_notional must be a positive number of quote units, got {whale_notional!r}")
        multiple_ok = isinstance(whale_median_multiple, int | float) and math.isfinite(whale_median_multiple)
        if not (multiple_ok and whale_median_multiple >= 0):
            raise ValueError(f"whale_median_multiple must be >= 0 (0 = off), got {whale_median_multiple!r}")
        if not (isinstance(grace_ms, int) and 0 <= grace_ms < MINUTE_MS):
            raise ValueError(f"grace_ms must be an int in [0, 60000) ms of data time, got {grace_ms!r}")
        self.whale_notional = float(whale_notional)
        self.whale_median_multiple = float(whale_median_multiple)
        self.has_liquidations = bool(has_liquidations)
        self.grace_ms = grace_ms
        self._median = RollingMedian(whale_median_window) if self.whale_median_multiple > 0 else None
        self.whale_median_min_trades = (
            max(1, whale_median_window // 10) if whale_median_min_trades is None else max(1, whale_median_min_trades)
        )
        self.late_trades = 0
        self.duplicates = 0
        self.late_liquidations = 0
        self.orphan_liquidations = 0
        self.rejected: dict[str, int] = {}
        self.clock_ms: int | None = None  # newest data time seen (trades or flush)
        self._bars: dict[int, _Bar] = {}  # minute -> open bar (usually 1, 2 during a grace)
        self._due_ms: int | None = None  # the earliest clock at which an open bar must be emitted
        self._pending_liqs: dict[int, list[Liquidation]] = {}  # liquidations ahead of their bar

    # -- input ---------------------------------------------------------------------------------------
    def add_trade(self, trade: Trade) -> list[dict[str, Any]]:
        """Add one trade; returns the bars whose grace it ended (dicts keyed open_time + BAR_COLUMNS, in time order)."""
        price, amount, ts = trade.price, trade.amount, trade.ts_ms
        if not _positive(price):
            return self._reject("bad_price")
        if not _positive(amount):
            return self._reject("bad_amount")
        side = trade.side
        if side != "buy" and side != "sell":
            return self._reject("bad_side")
        closed = self._advance(ts)
        minute = ts - ts % MINUTE_MS
        if minute + MINUTE_MS + self.grace_ms <= self.clock_ms:  # type: ignore[operator]
            self.late_trades += 1
            log.info("late trade ignored (bar %s already out): %r", _open_time(minute).isoformat(), trade)
            return closed
        bar = self._bars.get(minute)
        if bar is None:
            bar = self._new_bar(minute, price, ts)
        tid = trade.id
        if tid:
            if tid in bar.ids:
                self.duplicates += 1
                return closed
            bar.ids.add(tid)
        if price > bar.high:
            bar.high = price
        elif price < bar.low:
            bar.low = price
        if ts >= bar.last_ts:
            bar.close, bar.last_ts = price, ts
        elif ts < bar.first_ts:
            bar.open, bar.first_ts = price, ts
        bar.volume += amount
        bar.trades += 1
        whale = price * amount >= self.whale_notional
        med = self._median
        if med is not None:
            if whale and len(med) >= self.whale_median_min_trades:
                whale = amount >= self.whale_median_multiple * med.median()
            med.add(amount)
        if side == "buy":
            bar.buy += amount
            if whale:
                bar.whale_buy += amount
        else:
            bar.sell += amount
            if whale:
                bar.whale_sell += amount
        return closed

    def add_liquidation(self, liq: Liquidation) -> None:
        """Add one liquidation to the bar of its minute (held until that bar starts if it is ahead)."""
        if liq.side not in ("long", "short") or not _positive(liq.amount):
            self.rejected["bad_liquidation"] = self.rejected.get("bad_liquidation", 0) + 1
            return
        minute = liq.ts_ms - liq.ts_ms % MINUTE_MS
        bar = self._bars.get(minute)
        if bar is not None:
            self._apply_liq(bar, liq)
        elif self.clock_ms is not None and minute + MINUTE_MS + self.grace_ms <= self.clock_ms:
            self.late_liquidations += 1
        else:
            self._pending_liqs.setdefault(minute, []).append(liq)

    def flush(self, now_ms: int) -> list[dict[str, Any]]:
        """Advance the clock to `now_ms` (data time) and emit every bar whose minute + grace has passed.

        A quiet market still closes its bars this way; `now_ms` never moves the clock backwards.
        """
        return self._advance(now_ms)

    def snapshot(self) -> dict[str, Any] | None:
        """The newest bar in progress (not emitted), for live ticks to the browser; None when there is none."""
        if not self._bars:
            return None
        return self._as_dict(self._bars[max(self._bars)])

    # -- internals -----------------------------------------------------------------------------------
    def _reject(self, reason: str) -> list[dict[str, Any]]:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return []

    def _advance(self, now_ms: int) -> list[dict[str, Any]]:
        if self.clock_ms is None or now_ms > self.clock_ms:
            self.clock_ms = now_ms
        due = self._due_ms
        if (due is None or self.clock_ms < due) and not self._pending_liqs:  # the per-trade fast path
            return []
        grace = self.grace_ms
        out = []
        if due is not None and self.clock_ms >= due:
            for minute in sorted(self._bars):
                if minute + MINUTE_MS + grace > self.clock_ms:
                    break
                out.append(self._as_dict(self._bars.pop(minute)))
            self._due_ms = min(self._bars) + MINUTE_MS + grace if self._bars else None
        horizon = self.clock_ms - MINUTE_MS - grace  # minutes at or before this can no longer get a bar
        for m in [m for m in self._pending_liqs if m <= horizon]:
            self.orphan_liquidations += len(self._pending_liqs.pop(m))
        return out

    def _new_bar(self, minute: int, price: float, ts: int) -> _Bar:
        bar = self._bars[minute] = _Bar(minute, price, price, price, price, first_ts=ts, last_ts=ts)
        due = minute + MINUTE_MS + self.grace_ms
        if self._due_ms is None or due < self._due_ms:
            self._due_ms = due
        for liq in self._pending_liqs.pop(minute, ()):
            self._apply_liq(bar, liq)
        return bar

    @staticmethod
    def _apply_liq(bar: _Bar, liq: Liquidation) -> None:
        if liq.side == "long":
            bar.liq_long += liq.amount
        else:
            bar.liq_short += liq.amount

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
