"""The simulated feed (HFT_FEED=sim): the seeded MarketSimulator's trades through the common pipeline.

The offline default for demos. On a fresh database it first writes the history the desk's ghosts need to
be warm (their longest warm-up, at least `BACKFILL_MINUTES`; the trend gate's 1h averages need ~8.5 days),
stored in bulk and not evaluated, then runs `speed` data seconds per wall second.
"""

import time
from collections.abc import Callable

from django.conf import settings
from django.db.models import Max

from apps.market.models import FeedStatus, Instrument
from apps.market.selectors import last_candle
from apps.market.sim import MarketSimulator, sim_profile
from apps.market.sink import PipelineFactory

LOOP_SLEEP = 0.05
BACKFILL_MINUTES = 240
BACKFILL_CHUNK_MS = 24 * 3600 * 1000


class SimFeed:
    def __init__(
        self,
        instrument: Instrument,
        *,
        make_pipeline: PipelineFactory,
        heartbeat: Callable[[], bool],
        speed: float | None = None,
        max_seconds: float | None = None,
        warmup_minutes: int = 0,
    ) -> None:
        self.instrument = instrument
        self.heartbeat = heartbeat
        self.speed = speed or settings.HFT_SIM_SPEED
        self.max_seconds = max_seconds
        self.warmup_minutes = warmup_minutes  # the ghosts' longest warm-up, told by the runtime
        self.pipeline = make_pipeline(has_liquidations=True)

    def _start(self) -> tuple[MarketSimulator, int]:
        last = last_candle(instrument_id=self.instrument.pk)
        now_ms = max(int(time.time() * 1000), self._sim_clock_ms()) // 60_000 * 60_000
        backfill = last is None
        minutes = max(BACKFILL_MINUTES, self.warmup_minutes + 30)
        if backfill:
            start_ms = now_ms - minutes * 60_000
        else:
            start_ms = max(now_ms, int(last.open_time.timestamp() * 1000) + 60_000)
        # Each instrument its own market (price level, volatility, path); binance BTC/USDT the calibrated one.
        profile = sim_profile(self.instrument.exchange.code, self.instrument.symbol)
        start_price = float(last.close) if last else profile.start_price
        # Seed with the start minute too: a restart continues with a fresh but reproducible path.
        sim = MarketSimulator(
            seed=settings.HFT_SIM_SEED * 1_000_003 + start_ms // 60_000 + profile.seed_offset,
            start_ms=start_ms,
            spikes_per_day=settings.HFT_SIM_SPIKES_PER_DAY,
            **{**profile.kwargs(), "start_price": start_price, **self._grid()},
        )
        if backfill:
            # A day of data at a time (~2 s), beating the heart between chunks: the whole warm-up takes longer
            # than the lock's TTL, and a lapsed lock would make the supervisor start a second runner.
            for chunk_end in range(start_ms + BACKFILL_CHUNK_MS, now_ms + BACKFILL_CHUNK_MS, BACKFILL_CHUNK_MS):
                until = min(chunk_end, now_ms) - 1
                trades, liqs = sim.advance(until)
                self.pipeline.backfill(trades, liqs, now_ms=until)
                if not self.heartbeat():
                    break
        return sim, sim.now_ms

    def _sim_clock_ms(self) -> int:
        """The data time of the other simulated instruments (0 when none has traded). They share one market clock:
        at HFT_SIM_SPEED=120 a sim started 10 wall minutes after another would otherwise run 20 data hours behind
        it, and the desk's trading day (the newest trade of any feed) would put its fills on past days."""
        newest = (FeedStatus.objects.filter(source="sim").exclude(instrument=self.instrument)
                  .aggregate(t=Max("last_trade_at"))["t"])
        return int(newest.timestamp() * 1000) if newest else 0

    def _grid(self) -> dict[str, float]:
        """The instrument's own tick (and lot on spot, where the lot is in base units like the simulator's trades)
        when ccxt's facts are stored, so simulated prints land where the exchange's would."""
        out = {}
        if self.instrument.price_tick:
            out["tick_size"] = float(self.instrument.price_tick)
        if self.instrument.amount_step and self.instrument.market_type == Instrument.MarketType.SPOT:
            out["lot_size"] = float(self.instrument.amount_step)
        return out

    def run(self) -> None:
        sim, data_start = self._start()
        wall_start = time.monotonic()
        self.pipeline.publish(force=True, last_error="", next_retry_at=None)
        while True:
            elapsed = time.monotonic() - wall_start
            if (self.max_seconds is not None and elapsed > self.max_seconds) or not self.heartbeat():
                break
            self.pipeline.refresh_positions()
            until_ms = data_start + int(elapsed * self.speed * 1000)
            trades, liqs = sim.advance(until_ms)
            self.pipeline.consume(trades, liqs, evaluate=True, now_ms=until_ms)
            self.pipeline.publish(state=FeedStatus.State.CONNECTED)
            time.sleep(LOOP_SLEEP)
