"""The one path every feed's data takes, whatever its source (sim, replay, live ccxt):

    trades/liquidations -> Sanitiser -> BarBuilder -> candle_store -> (after commit) ghosts
                        -> stops/targets of open positions checked on every accepted trade
                        -> last price to Redis, throttled ticks and feed status to browsers
                        -> the desk's P&L (pnl.updated) at most once a second, while marks move or the day turns

A source only has to hand `consume` its items in arrival order together with its clock (`now_ms`, data
time for sim/replay, exchange-synchronised wall time live) and call `publish` now and then. Keeping
this in one class is what makes a replay test prove the live path: only the source differs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from apps.engine.exits import bar_check
from apps.engine.types import BAR_COLUMNS
from apps.market.bar_builder import DEFAULT_GRACE_MS, MINUTE_MS, BarBuilder, Liquidation, Trade
from apps.market.models import CANDLE_BAR_FIELDS, FeedStatus, Instrument
from apps.market.prices import positions_version, price_set
from apps.market.sanitize import Sanitiser
from apps.market.services import candle_store, feed_status_update
from apps.market.sink import PipelineFactory
from apps.trading.execution import position_exit, positions_check_price
from apps.trading.selectors import open_positions, pnl_push

if TYPE_CHECKING:
    from apps.runtime.evaluation import BarDecider

log = logging.getLogger(__name__)
TICK_PUSH_SECONDS = 0.25  # browsers get a few prices a second, not every trade
STATUS_SECONDS = 1.0
PNL_PUSH_SECONDS = 1.0  # the header's P&L marked to market between fills: at most one pnl.updated a second per feed


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _dec(x: float) -> Decimal:
    return Decimal(repr(x)).quantize(Decimal("0.0000000001"))


class FeedPipeline:
    """Sanitise, aggregate, store and check stops for one instrument's stream (see the module docstring)."""

    def __init__(
        self,
        instrument: Instrument,
        *,
        on_bar: Callable | None,
        has_liquidations: bool,
        sanitiser: Sanitiser | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
        decider: BarDecider | None = None,
    ) -> None:
        self.instrument = instrument
        self.on_bar = on_bar
        # apps.runtime.evaluation.BarDecider: a replay's closed bars are stored and decided in chunks, in-process
        # (consume_bars); without it each stored bar goes to on_bar (live and sim queue evaluate_bar).
        self.decider = decider
        from django.conf import settings

        self.builder = BarBuilder(
            whale_notional=float(instrument.whale_notional),
            whale_median_multiple=float(instrument.whale_median_multiple),
            has_liquidations=has_liquidations,
            grace_ms=int(getattr(settings, "HFT_BAR_GRACE_MS", DEFAULT_GRACE_MS)),
        )
        self.sanitiser = sanitiser or Sanitiser()
        self.wall_clock = wall_clock
        self.positions: list = []
        self.positions_seen = -1
        self.last_price: float | None = None
        self.last_ts = 0
        self.bars_stored = 0
        self._pending_bar: dict | None = None  # kline replays hold one bar back (see consume_bars)
        self._last_tick = self._last_status = self._last_pnl = float("-inf")
        self._pnl_price: float | None = None  # this feed's price and data day at its last pnl.updated
        self._pnl_day = None

    # -- data in -------------------------------------------------------------------------------------
    def consume(
        self, trades: Iterable[Trade], liqs: Iterable[Liquidation] = (), *, now_ms: int, evaluate: bool = True
    ) -> None:
        """Sanitise then aggregate; `evaluate=False` stores bars without queueing ghosts (backfill)."""
        for liq in liqs:
            reason = self.sanitiser.check_liquidation(liq, now_ms)
            if reason:
                log.debug("%s: liquidation rejected (%s): %r", self.instrument.symbol, reason, liq)
                continue
            self.builder.add_liquidation(liq)
        for t in trades:
            reason = self.sanitiser.check_trade(t, now_ms)
            if reason:
                log.debug("%s: trade rejected (%s): %r", self.instrument.symbol, reason, t)
                continue
            closed = self.builder.add_trade(t)
            self.last_price, self.last_ts = t.price, t.ts_ms
            if closed:
                # The trade that closes a bar is the first price after it: the fill price of its signals.
                price_set(self.instrument.pk, t.price, t.ts_ms)
                self._store(closed, evaluate)
                if evaluate and self.decider is None:
                    self.refresh_positions()  # a synchronous evaluation (replay) may have opened one
            if evaluate and self.positions:
                closed = positions_check_price(
                    instrument_id=self.instrument.pk, price=t.price, at=ms_to_dt(t.ts_ms), open_positions=self.positions
                )
                if closed:
                    self.positions = [p for p in self.positions if p not in closed]

    def backfill(self, trades: Iterable[Trade], liqs: Iterable[Liquidation] = (), *, now_ms: int) -> int:
        """History before the live loop starts: the same sanitiser and builder, the bars stored in one bulk
        insert (no browser push, no ghosts: nobody trades the past). Returns the bars newly stored."""
        import pandas as pd

        from apps.market.services import candles_from_trades_store

        for liq in liqs:
            if not self.sanitiser.check_liquidation(liq, now_ms):
                self.builder.add_liquidation(liq)
        bars: list[dict] = []
        for t in trades:
            if not self.sanitiser.check_trade(t, now_ms):
                bars += self.builder.add_trade(t)
                self.last_price, self.last_ts = t.price, t.ts_ms
        bars += self.builder.flush(now_ms)
        if not bars:
            return 0
        stored = candles_from_trades_store(instrument=self.instrument, bars=pd.DataFrame(bars))
        self.bars_stored += stored
        return stored

    def consume_bars(self, bars: Iterable[dict], *, now_ms: int, evaluate: bool = True) -> None:
        """Closed 1m bars from a source that has no trades (a kline replay): sanitise each, store it through
        the same candle_store + on_bar path, and check the open positions' stops/targets against its range.

        Intrabar order is unknown, so the backtest's rule applies (apps.engine.exits.bar_check: a due time
        stop exits at the open first, an open beyond the stop or the target exits at that open, a range
        holding both stop and target exits at the stop), only for positions opened at or before the bar's open.
        `now_ms` is the caller's clock (data time).
        """
        if evaluate and self.decider is not None:
            self._consume_bars_chunk(bars, now_ms=now_ms)
            return
        for bar in bars:
            reason = self.sanitiser.check_candle(bar, now_ms)
            if reason:
                log.debug("%s: bar rejected (%s): %r", self.instrument.symbol, reason, bar)
                continue
            # A bar is stored (and decided) when the next one arrives: the next bar's open is the first price
            # after it closed, the price its signals fill at, exactly as in the backtest.
            open_ms = int(bar["open_time"].timestamp() * 1000)
            self._release_pending_bar(float(bar["open"]), open_ms, evaluate)
            self._pending_bar = bar
            self.last_price, self.last_ts = float(bar["close"]), open_ms + MINUTE_MS - 1
            if evaluate and self.positions:
                self._check_bar_exits(bar)

    def finish_bars(self, *, evaluate: bool = True) -> None:
        """The data is over: store the held-back last bar (its signals see its own close as the next price)."""
        bar = self._pending_bar
        if bar is not None and evaluate and self.decider is not None:
            self._pending_bar = None
            close_ms = int(bar["open_time"].timestamp() * 1000) + MINUTE_MS - 1
            drafts, gates = self._store_chunk([bar])
            self._decide(bar, float(bar["close"]), close_ms, drafts, gates)
        elif bar is not None:
            self._release_pending_bar(float(bar["close"]), int(bar["open_time"].timestamp() * 1000) + MINUTE_MS - 1,
                                      evaluate)

    def _consume_bars_chunk(self, bars: Iterable[dict], *, now_ms: int) -> None:
        """consume_bars for a replay with a BarDecider: the same order of events as bar by bar (bar t decided at
        bar t+1's open, then bar t+1's range checked against the open positions), with the bars stored in bulk
        and every ghost run once over the chunk; only bars with drafts or open positions cost a database write."""
        accepted = []
        for bar in bars:
            reason = self.sanitiser.check_candle(bar, now_ms)
            if reason:
                log.debug("%s: bar rejected (%s): %r", self.instrument.symbol, reason, bar)
                continue
            accepted.append(bar)
        if not accepted:
            return
        prev = self._pending_bar
        released = ([prev] if prev is not None else []) + accepted[:-1]
        drafts, gates = self._store_chunk(released)
        for bar in accepted:
            open_ms = int(bar["open_time"].timestamp() * 1000)
            if prev is not None:
                self._decide(prev, float(bar["open"]), open_ms, drafts, gates)
            self.last_price, self.last_ts = float(bar["close"]), open_ms + MINUTE_MS - 1
            if self.positions:
                self._check_bar_exits(bar)
            prev = bar
        self._pending_bar = prev

    def _store_chunk(self, bars: list[dict]) -> tuple[dict, dict]:
        """Store closed bars in bulk; the decider's drafts and gates for the ones this run stored."""
        from apps.market.services import candles_store_many

        if not bars:
            return {}, {}
        rows, new = candles_store_many(instrument=self.instrument, bars=bars)
        self.bars_stored += len(new)
        if not new:
            return {}, {}
        return self.decider.drafts(engine_frame(rows), new={pd.Timestamp(t) for t in new})

    def set_preview(self, bars: pd.DataFrame) -> None:
        """A trade replay's bars built ahead from its trades (importers.bars_from_trades): the decider evaluates
        them in chunks and uses their drafts while the stored bars come out the same (BarDecider.set_preview)."""
        from apps.market.services import candle_row

        if self.decider is not None and len(bars):
            self.decider.set_preview(engine_frame([candle_row(b) for b in bars.to_dict("records")]))

    def _decide(self, bar: dict, price: float, ts_ms: int, drafts: dict, gates: dict) -> None:
        t = pd.Timestamp(bar["open_time"])
        found = drafts.get(t)
        if found:
            self.decider.decide(bar_time=bar["open_time"], drafts=found, gate=gates.get(t), price=price, ts_ms=ts_ms)
            self.refresh_positions()

    def _release_pending_bar(self, next_price: float, next_ms: int, evaluate: bool) -> None:
        bar, self._pending_bar = self._pending_bar, None
        if bar is None:
            return
        price_set(self.instrument.pk, next_price, next_ms)
        self._store([bar], evaluate)
        if evaluate:
            self.refresh_positions()

    def _check_bar_exits(self, bar: dict) -> None:
        at_open = bar["open_time"]
        at_close = ms_to_dt(int(at_open.timestamp() * 1000) + MINUTE_MS - 1)
        still_open = []
        for p in self.positions:
            if p.opened_at > at_open:  # entered inside or after this bar: its range is not all after the entry
                still_open.append(p)
                continue
            sign = 1 if p.side == "long" else -1
            # Due at this bar's open (exits.due): the time stop exits at that open before any level; otherwise
            # bar_exit (the backtest's order, apps.engine.exits.bar_check).
            time_due = p.time_stop_at is not None and at_open >= p.time_stop_at and p.opened_at < at_open
            hit = bar_check(sign, float(p.stop), float(p.target), float(bar["open"]), float(bar["high"]),
                            float(bar["low"]), time_due=time_due)
            at = at_open if time_due else at_close
            done = position_exit(position_id=p.pk, price=hit[0], at=at, reason=hit[1]) if hit else None
            if done is None:
                still_open.append(p)
        self.positions = still_open

    def flush(self, now_ms: int, *, evaluate: bool = True) -> None:
        """Close the bar in progress once `now_ms` has passed its minute (a quiet market still closes bars)."""
        self._store(self.builder.flush(now_ms), evaluate)

    def _store(self, bars: list[dict], evaluate: bool) -> None:
        if evaluate and bars and self.decider is not None:
            # A trade replay: decided in-process like live's queued task would, at the latest price (the trade that
            # closed the bar; for a bar closed by the clock the one before it, which the decision finds stale).
            drafts, gates = self._store_chunk(bars)
            for bar in bars:
                self._decide(bar, self.last_price, self.last_ts, drafts, gates)
            return
        for bar in bars:
            _, created = candle_store(
                instrument_id=self.instrument.pk, bar=bar, on_stored=self.on_bar if evaluate else None
            )
            self.bars_stored += int(created)

    def refresh_positions(self) -> None:
        """Reload the open positions whose stops we check, only when a fill or close bumped the version."""
        version = positions_version(self.instrument.pk)
        if version != self.positions_seen:
            self.positions_seen = version
            self.positions = list(open_positions(instrument_id=self.instrument.pk))

    # -- state out -----------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """The BarBuilder's counters plus the sanitiser's reasons, as published in FeedStatus.rejected."""
        b = self.builder
        counts = {k: int(getattr(b, k)) for k in ("late_trades", "duplicates", "late_liquidations") if getattr(b, k, 0)}
        return {**counts, **b.rejected, **self.sanitiser.counts}

    def publish(self, *, state: str = FeedStatus.State.CONNECTED, force: bool = False, **status) -> None:
        """Last price to Redis; a throttled tick to browsers; the feed status once a second (or now if forced), and
        with it the desk's P&L when the marks moved or the day changed (at most once a second: `_pnl_due`)."""
        from apps.common.realtime import send_now

        now = self.wall_clock()
        if self.last_price is not None:
            price_set(self.instrument.pk, self.last_price, self.last_ts)
            if force or now - self._last_tick >= TICK_PUSH_SECONDS:
                self._last_tick = now
                send_now(
                    self.instrument.group_name,
                    {
                        "type": "market.tick",
                        "instrument_id": self.instrument.pk,
                        "symbol": self.instrument.symbol,
                        "price": self.last_price,
                        "ts": ms_to_dt(self.last_ts).isoformat(),
                    },
                )
        pnl_due = self._pnl_due(now)
        if force or pnl_due or now - self._last_status >= STATUS_SECONDS:
            self._last_status = now
            if self.last_price is not None:
                status.setdefault("last_price", _dec(self.last_price))
                status.setdefault("last_trade_at", ms_to_dt(self.last_ts))
            feed_status_update(instrument_id=self.instrument.pk, state=state, rejected=self.counts(), **status)
            if pnl_due:  # after the status row took the last price: the snapshot marks to it
                self._last_pnl, self._pnl_price, self._pnl_day = now, self.last_price, ms_to_dt(self.last_ts).date()
                pnl_push()

    def _pnl_due(self, now: float) -> bool:
        """Whether this step pushes the P&L snapshot (the payload a fill pushes, `pnl.updated`) to browsers: when
        this instrument has open positions and its price moved since the last push (their marks moved), or when
        this feed's data day changed (a new trading day: "today" starts at zero; a runner's first step with a
        price says which day it is). At most once per PNL_PUSH_SECONDS of wall time, forced steps included; a push
        held back by that goes out with the first step after it, with the status row it marks to. Cost:
        pnl_snapshot's eight small queries and one group send (benchmarks/pnl_push.py)."""
        if self.last_price is None or now - self._last_pnl < PNL_PUSH_SECONDS:
            return False
        moved = bool(self.positions) and self.last_price != self._pnl_price
        return moved or ms_to_dt(self.last_ts).date() != self._pnl_day


def engine_frame(rows: list[tuple]) -> pd.DataFrame:
    """Stored bars (candles_store_many's rows: open_time, *CANDLE_BAR_FIELDS, trade_count) as the engine's bars
    frame, the values apps.market.selectors.candle_bars would read back."""
    index = pd.DatetimeIndex(pd.to_datetime([r[0] for r in rows], utc=True), name="open_time")
    values = np.array([[np.nan if v is None else float(v) for v in r[1:]] for r in rows], dtype=np.float64)
    data = {f: values[:, k] for k, f in enumerate(CANDLE_BAR_FIELDS)}
    data["trades"] = values[:, len(CANDLE_BAR_FIELDS)]
    return pd.DataFrame(data, index=index)[list(BAR_COLUMNS)]


def pipeline_factory(instrument: Instrument, *, on_bar: Callable | None = None,
                     decider: BarDecider | None = None) -> PipelineFactory:
    """What a feed adapter is given to build its pipeline (it knows whether it has liquidations)."""

    def make(*, has_liquidations: bool) -> FeedPipeline:
        return FeedPipeline(instrument, on_bar=on_bar, has_liquidations=has_liquidations, decider=decider)

    return make
