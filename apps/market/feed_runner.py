"""The loop behind one feed task: trades in, 1-minute bars out, stops checked on every trade.

For now the source is the seeded simulator (HFT_FEED=sim); live ccxt and replay sources plug into the
same loop later (they only have to yield trades and liquidations in data-time order).
"""

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings

from apps.market.bar_builder import BarBuilder, Trade
from apps.market.models import FeedStatus, Instrument
from apps.market.prices import positions_version, price_set
from apps.market.sanitize import Sanitiser
from apps.market.selectors import last_candle
from apps.market.services import candle_store, feed_status_update
from apps.market.sim import MarketSimulator
from apps.trading.selectors import open_positions
from apps.trading.services import positions_check_price

log = logging.getLogger(__name__)
TICK_PUSH_SECONDS = 0.25  # browsers get a few prices a second, not every trade
STATUS_SECONDS = 1.0
LOOP_SLEEP = 0.05
BACKFILL_MINUTES = (
    240  # on a fresh database the sim first writes 4 h of history so the chart and ghosts warm up
)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class SimFeed:
    def __init__(
        self,
        instrument: Instrument,
        *,
        on_bar: Callable,
        heartbeat: Callable[[], bool],
        speed: float | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.instrument = instrument
        self.on_bar = on_bar
        self.heartbeat = heartbeat
        self.speed = speed or settings.HFT_SIM_SPEED
        self.max_seconds = max_seconds
        self.builder = BarBuilder(has_liquidations=True)
        self.sanitiser = Sanitiser()
        self.positions: list = []
        self.positions_seen = -1
        self.last_price: float | None = None
        self.last_ts = 0

    def _start(self) -> tuple[MarketSimulator, int]:
        last = last_candle(instrument_id=self.instrument.pk)
        now_ms = int(time.time() * 1000) // 60_000 * 60_000
        backfill = last is None
        start_ms = (
            now_ms - BACKFILL_MINUTES * 60_000
            if backfill
            else max(now_ms, int(last.open_time.timestamp() * 1000) + 60_000)
        )
        start_price = float(last.close) if last else 100_000.0
        # Seed with the start minute too: a restart continues with a fresh but reproducible path.
        sim = MarketSimulator(
            seed=settings.HFT_SIM_SEED * 1_000_003 + start_ms // 60_000,
            start_ms=start_ms,
            start_price=start_price,
            spikes_per_day=settings.HFT_SIM_SPIKES_PER_DAY,
        )
        if backfill:
            trades, liqs = sim.advance(now_ms - 1)
            self._consume(trades, liqs, evaluate=False, now_ms=now_ms - 1)
        return sim, sim.now_ms

    def _consume(self, trades: list[Trade], liqs, *, evaluate: bool, now_ms: int) -> None:
        """Sanitise, then aggregate. `now_ms` is the sim's data clock (the `until_ms` it advanced to)."""
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
            for bar in self.builder.add_trade(t):
                candle_store(
                    instrument_id=self.instrument.pk, bar=bar, on_stored=self.on_bar if evaluate else None
                )
            self.last_price, self.last_ts = t.price, t.ts_ms
            if evaluate and self.positions:
                closed = positions_check_price(
                    instrument_id=self.instrument.pk,
                    price=t.price,
                    at=_dt(t.ts_ms),
                    open_positions=self.positions,
                )
                if closed:
                    self.positions = [p for p in self.positions if p not in closed]

    def _refresh_positions(self) -> None:
        version = positions_version(self.instrument.pk)
        if version != self.positions_seen:
            self.positions_seen = version
            self.positions = list(open_positions(instrument_id=self.instrument.pk))

    def run(self) -> None:
        from apps.common.realtime import send_now

        sim, data_start = self._start()
        wall_start = time.monotonic()
        feed_status_update(
            instrument_id=self.instrument.pk,
            state=FeedStatus.State.CONNECTED,
            last_error="",
            next_retry_at=None,
        )
        last_tick = last_status = 0.0
        while True:
            elapsed = time.monotonic() - wall_start
            if (self.max_seconds is not None and elapsed > self.max_seconds) or not self.heartbeat():
                break
            self._refresh_positions()
            until_ms = data_start + int(elapsed * self.speed * 1000)
            trades, liqs = sim.advance(until_ms)
            self._consume(trades, liqs, evaluate=True, now_ms=until_ms)
            if self.last_price is not None:
                price_set(self.instrument.pk, self.last_price, self.last_ts)
                now = time.monotonic()
                if now - last_tick >= TICK_PUSH_SECONDS:
                    last_tick = now
                    send_now(
                        self.instrument.group_name,
                        {
                            "type": "market.tick",
                            "instrument_id": self.instrument.pk,
                            "symbol": self.instrument.symbol,
                            "price": self.last_price,
                            "ts": _dt(self.last_ts).isoformat(),
                        },
                    )
                if now - last_status >= STATUS_SECONDS:
                    last_status = now
                    feed_status_update(
                        instrument_id=self.instrument.pk,
                        state=FeedStatus.State.CONNECTED,
                        last_price=_dec(self.last_price),
                        last_trade_at=_dt(self.last_ts),
                        rejected=_counts(self.builder, self.sanitiser),
                    )
            time.sleep(LOOP_SLEEP)


def _dec(x: float) -> Decimal:
    return Decimal(repr(x)).quantize(Decimal("0.0000000001"))


def _counts(builder: BarBuilder, sanitiser: Sanitiser | None = None) -> dict[str, int]:
    """The BarBuilder's counters plus the sanitiser's reasons, as published in FeedStatus.rejected."""
    counts = {
        k: int(getattr(builder, k))
        for k in ("late_trades", "duplicates", "late_liquidations")
        if getattr(builder, k, 0)
    }
    return {**counts, **builder.rejected, **(sanitiser.counts if sanitiser is not None else {})}
