"""A seeded market simulator: the offline feed (`HFT_FEED=sim`) and a test bed for the ghosts.

Pure Python + numpy (no Django): the feed task drives it from the wall clock with a speed factor,
calling `advance(start_ms + elapsed_wall_s * speed * 1000)`, and pushes the returned trades through the
same BarBuilder as live data.

Determinism: all randomness comes from one `numpy.random.Generator(PCG64(seed))`, drawn minute by
minute in a fixed order, and a simulated minute is always generated whole. So the same seed and
parameters give byte-identical trade and liquidation streams however `advance` is chunked (a wall-clock
driver calls it at irregular times).

Model, per simulated minute:
- regime: a 4-state Markov chain (calm / trending up / trending down / volatile) with its own drift,
  volatility multiplier and volume level; sigma is scaled so the stationary mix PLUS the spikes has the
  calibrated per-minute std (the real std includes the real market's own spikes);
- price: the minute's log-return is Gaussian; trades sit on a Brownian bridge between the minute
  boundaries, so bar closes reproduce the minute-level statistics; prices on a 0.01 tick grid;
- volume: lognormal per minute, times the regime's level (volatile minutes trade more, as real ones do),
  higher when the minute moves more (real BTC: corr(volume, |return|) 0.49), scaled so the long-run mean
  volume per minute matches the calibration (spikes included);
- taker side: P(buy) = 0.518 + 0.066 x (minute return / calibrated std), clipped to [0.05, 0.95], the
  linear fit on the 2020 klines with taker-buy volume;
- trades: Poisson count (`trades_per_minute` x activity), lognormal sizes that add up to the minute's
  volume, rounded to a 0.00001 lot. The count is far below the real market's (real 2020 BTCUSDT spot:
  mean 240, median 173 trades per minute; 2025 is higher), on purpose: a feed that is cheap to run.
  Sizes are scaled so volume per minute still matches. Large trades (whale prints) come from the tail;
- spikes: a Poisson process with mean rate `spikes_per_day` (start to start, per simulated day; the
  desk's `HFT_SIM_SPIKES_PER_DAY`): a 1.5-3 % move in 2-8 minutes with 3-6x volume, then a partial
  reversion (30-60 % of the move over 5-15 minutes). The default, CAL_SPIKES_PER_DAY = 0.05, is calibrated:
  the real 90-day file has 0.22 episodes a day of >= 1.2 % in 15 min, and the background (volatile bursts,
  trends) already makes most of them. The spikes' variance is taken out of the background's, so the total
  per-minute std stays calibrated up to about 1 spike a day (`calibrated` True). Above that (24 a day was
  the old demo default) the background keeps half the calibrated variance and the total std is higher:
  `expected_return_std` says by how much (x3.4 at 24 a day: the 0.16 % measured on the desk's candles
  over 8.6 days, with BTC wandering 75.9k-106.3k, issue 14). The shorts (up-spike) or longs (down-spike)
  caught by a spike are liquidated in bursts of forced orders, at most one per second as Binance's
  `!forceOrder` stream throttles them; a few background liquidations happen at other times.
- Liquidation orders are reported on their own stream, not duplicated into the trade stream.

Calibration (measured by benchmarks/calibrate_sim.py; not invented):
- Binance spot BTC/USDT 1m, 2025-05-20 00:00 .. 2025-08-18 18:27 UTC (freqtrade download, 130,708 bars):
  per-minute close-to-close log-return std 0.0456 % (robust, 1.4826 x MAD: 0.0285 %; excess kurtosis 12),
  volume per minute mean 11.05 BTC, median 5.94 BTC (std of log volume 1.12),
  corr(volume, |return|) 0.49, median close 109,361 USDT, median 1-minute high/low range 0.031 %.
- Binance spot BTC/USDT 1m with taker-buy volume, 2020-01-01 .. 2020-01-07 (8,641 bars): taker-buy share
  of volume 0.518 (volume-weighted; per-minute median 0.529), slope of the per-minute share on the
  minute return in units of its std 0.066; trades per minute mean 240, median 173.
- Per regime: the file has no regime labels, so benchmarks/calibrate_sim.py puts real and simulated minutes
  in the same buckets of trailing 30-minute realised std (calm < 0.7x, normal 0.7-1.5x, volatile > 1.5x
  the calibrated std). Real: calm 44 % of minutes (std 0.0269 %, volume 5.88), normal 46 % (0.0480 %,
  12.07), volatile 10 % (0.0836 %, 28.93).
- The simulator against those figures (30 simulated days, seed 7, 5 trades/min, bars built by BarBuilder),
  at the default spike rate: return std x1.04, robust std x1.15, excess kurtosis 17, volume mean x1.02,
  median x0.90, log-volume std 0.99, corr(volume, |return|) 0.57, taker-buy share 0.513, episodes
  0.37/day (x1.7: a count of 11 in 30 days; 0.23/day without spikes), hourly return std x1.06, daily x1.24
  (30 samples; the real file reverts a little over a day, the simulator does not); per regime share
  0.45/0.46/0.09, std x1.26/x1.03/x0.96, volume x1.23/x1.05/x0.84. At 24 spikes a day: raw std x3.3,
  hourly x4.2, episodes x100. Seeds 1-7 at 2 trades/min: std x0.99-1.05, robust x1.08-1.11.
- Tolerances the tests hold it to (tests/market/test_sim.py): at the defaults over 30 seeded days, return
  std within x1.1, robust std x1.35, volume mean x1.1 and median x1.2, taker-buy share within 0.02,
  episodes within a factor 3, hourly return std within x1.2; without spikes (3 days) std, robust std
  and volume within x1.25; at 0.4 spikes a day std within x1.15; at 24 a day the std is what
  `expected_return_std` predicts (x1.15) and `calibrated` is False.
"""

import dataclasses
import math

import numpy as np

from apps.market.bar_builder import Liquidation, Trade

# Measured figures (see the module docstring and benchmarks/calibrate_sim.py).
CAL_RETURN_STD = 0.000456  # per-minute log-return std, BTC/USDT spot 2025-05-20..08-18
CAL_RETURN_STD_ROBUST = 0.000285  # 1.4826 x MAD of the same returns
# Hourly and daily close-to-close log-return std of the same file: the random walk's scale over time (the
# per-minute std x sqrt(60) is 0.353 %, x sqrt(1440) 1.731 %: a little mean reversion over a day).
CAL_RETURN_STD_1H = 0.00349
CAL_RETURN_STD_1D = 0.01578
CAL_VOLUME_MEAN = 11.05  # BTC per minute
CAL_VOLUME_MEDIAN = 5.94  # BTC per minute
CAL_TAKER_BUY_SHARE = 0.518  # taker-buy share of volume, BTC/USDT spot 2020-01-01..07
CAL_TAKER_SHARE_SLOPE = 0.066  # d(share) / d(return / std)
CAL_TRADES_PER_MINUTE = 240.0  # real mean, 2020 (the simulator defaults to far fewer)
# Episodes of a >= 1.2 % close-to-close move within 15 minutes in the same 90.8-day file (20 episodes; an episode
# ends after 5 quiet minutes). The spike process is one source of them; the regime model's trends make a few too.
CAL_SPIKE_EPISODES_PER_DAY = 20 / (130_708 / 1440)
# Rate of the spike process (start to start) that, with the background's own episodes, gives the measured episode
# rate: the default, so that the default market is the calibrated one (benchmarks/calibrate_sim.py checks it).
CAL_SPIKES_PER_DAY = 0.05

DEFAULT_START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC
MINUTE_MS = 60_000

REGIMES = ("calm", "trending_up", "trending_down", "volatile")
# Per-minute transition matrix (rows sum to 1): calm lasts ~1 h on average, trends ~25 min,
# volatile bursts ~5 min. (Bursts of ~10 min at 3x made >= 1.2 %/15 min episodes by themselves at 0.28-0.40 a
# day, above the real 0.22 with no spike at all; ~5 min gives 0.05-0.12 a day and the kurtosis of the file.)
_TRANSITIONS = np.array(
    [
        [0.985, 0.005, 0.005, 0.005],
        [0.030, 0.960, 0.000, 0.010],
        [0.030, 0.000, 0.960, 0.010],
        [0.160, 0.020, 0.020, 0.800],
    ]
)
_CUM_TRANSITIONS = np.cumsum(_TRANSITIONS, axis=1)
# Volatility relative to the base sigma; the spread between calm and volatile gives the fat tails
# (kurtosis 15-16 on the simulator vs 12 measured, robust std x1.14; calm 0.5 puts 46 % of minutes in the
# calm bucket, 44 % on the real file: benchmarks/calibrate_sim.py).
_VOL_MULT = np.array([0.5, 0.9, 0.9, 3.0])
# Drift per minute in base sigmas. It was 0.25: trends then made hourly returns x1.3 and daily x1.45 the real
# ones (the desk's BTC wandered 75.9k-106.3k in 8.6 days); 0.07 gives x1.0-1.05 hourly and x1.1 daily.
_DRIFT_SIGMAS = np.array([0.0, 0.07, -0.07, 0.0])
_REGIME_VOLUME_POWER = 1.0  # regime volume factor ~ its volatility multiplier to this power
_ACTIVITY_FLOOR = 0.5  # volume's share that does not follow the minute's own move (corr(volume, |r|))
_ACTIVITY_LOG_STD = 0.85  # log-spread of volume from activity and regime, taken out of the lognormal's (tuned)
_SIZE_LOG_STD = 1.0  # dispersion of trade sizes within a minute (log scale)
_LIQ_SIZE_MEDIAN = 0.05  # BTC per forced order (a few thousand USDT, as in the recorded !forceOrder logs)
_LIQ_SIZE_LOG_STD = 1.2
_REVERSION_VOLUME = 1.5  # volume multiplier during a spike's reversion


def _stationary(p: np.ndarray) -> np.ndarray:
    """Stationary distribution of a Markov transition matrix (left eigenvector for eigenvalue 1)."""
    vals, vecs = np.linalg.eig(p.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def _grid_inverse(step: float) -> float | None:
    """1/step when it is a whole number (0.01 -> 100), so grid rounding can divide instead of multiply."""
    inv = round(1.0 / step)
    return float(inv) if inv >= 1 and abs(inv * step - 1.0) < 1e-9 else None


# Several instruments (issue 11): each simulated market gets its own path and volatility. Known bases start near
# their real price with a volatility scale of the right order (per-minute std relative to BTC's calibrated one,
# a round figure, not measured); any other symbol gets a seeded price and scale. Volume is scaled so the notional
# traded per minute matches BTC's, and the tick and lot follow the price.
SIM_BASES: dict[str, tuple[float, float]] = {  # base -> (start price in USD, volatility scale vs BTC)
    "BTC": (100_000.0, 1.0),
    "ETH": (3_500.0, 1.3),
    "SOL": (150.0, 1.8),
    "BNB": (650.0, 1.1),
    "XRP": (2.5, 1.6),
    "DOGE": (0.3, 2.0),
}
DEFAULT_MARKET = ("binance", "BTC/USDT")  # the desk `make run` starts with: the calibrated simulator as it was


def _grid_step(x: float) -> float:
    """A power of ten at or below x (0.0123 -> 0.01)."""
    return 10.0 ** math.floor(math.log10(x))


@dataclasses.dataclass(frozen=True)
class SimProfile:
    """The MarketSimulator arguments that differ per instrument, and the seed offset that separates the paths."""

    seed_offset: int
    start_price: float
    vol_scale: float
    minute_return_std: float
    volume_per_minute: float
    volume_median: float
    tick_size: float
    lot_size: float

    def kwargs(self) -> dict[str, float]:
        return {"start_price": self.start_price, "minute_return_std": self.minute_return_std,
                "volume_per_minute": self.volume_per_minute, "volume_median": self.volume_median,
                "tick_size": self.tick_size, "lot_size": self.lot_size}


def sim_profile(exchange: str, symbol: str) -> SimProfile:
    """The simulated market of one instrument: deterministic in (exchange, symbol), whatever else the desk runs.

    Binance BTC/USDT keeps the calibrated defaults and seed offset 0 (the default desk's path is the one it always
    had). Other instruments draw from a generator seeded by crc32("exchange:symbol") (stable across processes,
    unlike hash()): a seed offset, and for an unknown base a start price (log-uniform 0.1..1,000) and a
    volatility scale (0.8..2.5). BTC/USDT:USDT on binanceusdm is BTC with its own path.
    """
    import zlib

    if (exchange, symbol) == DEFAULT_MARKET:
        return SimProfile(0, 100_000.0, 1.0, CAL_RETURN_STD, CAL_VOLUME_MEAN, CAL_VOLUME_MEDIAN, 0.01, 0.00001)
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(f"{exchange}:{symbol}".encode())))
    offset = int(rng.integers(1, 2**31))
    base = symbol.partition("/")[0].upper()
    price, scale = SIM_BASES.get(base) or (float(10 ** rng.uniform(-1, 3)), float(rng.uniform(0.8, 2.5)))
    notional_ratio = 100_000.0 / price  # the same notional per minute as the calibrated BTC market
    return SimProfile(
        seed_offset=offset, start_price=price, vol_scale=scale, minute_return_std=CAL_RETURN_STD * scale,
        volume_per_minute=CAL_VOLUME_MEAN * notional_ratio, volume_median=CAL_VOLUME_MEDIAN * notional_ratio,
        # ~1e-7 of the price and at most 0.01 (BTC: 0.01, ETH: 0.01, SOL: 0.001); a lot worth ~1 USD or less
        tick_size=min(0.01, _grid_step(price) * 1e-5), lot_size=_grid_step(1.0 / price),
    )


@dataclasses.dataclass(frozen=True)
class SpikeEvent:
    """A scheduled spike: [start_ms, end_ms) of the move; direction +1 up / -1 down; magnitude fraction."""

    start_ms: int
    end_ms: int
    direction: int
    magnitude: float


class MarketSimulator:
    """Seeded trade and liquidation generator; see the module docstring for the model and calibration."""

    def __init__(
        self,
        seed: int = 7,
        start_ms: int = DEFAULT_START_MS,
        start_price: float = 100_000.0,
        spikes_per_day: float = CAL_SPIKES_PER_DAY,
        trades_per_minute: float = 60.0,
        minute_return_std: float = CAL_RETURN_STD,
        volume_per_minute: float = CAL_VOLUME_MEAN,
        volume_median: float = CAL_VOLUME_MEDIAN,
        taker_buy_share: float = CAL_TAKER_BUY_SHARE,
        taker_share_slope: float = CAL_TAKER_SHARE_SLOPE,
        spike_pct: tuple[float, float] = (1.5, 3.0),
        spike_minutes: tuple[int, int] = (2, 8),
        liquidations_per_spike_minute: float = 8.0,
        background_liquidations_per_hour: float = 1.0,
        tick_size: float = 0.01,
        lot_size: float = 0.00001,
    ) -> None:
        def positive(name: str, v: float, zero_ok: bool = False) -> None:
            if not (isinstance(v, int | float) and math.isfinite(v) and (v >= 0 if zero_ok else v > 0)):
                raise ValueError(f"{name} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {v!r}")

        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        for name, v in (
            ("start_price", start_price),
            ("trades_per_minute", trades_per_minute),
            ("minute_return_std", minute_return_std),
            ("volume_per_minute", volume_per_minute),
            ("volume_median", volume_median),
            ("tick_size", tick_size),
            ("lot_size", lot_size),
        ):
            positive(name, v)
        for name, v in (
            ("spikes_per_day", spikes_per_day),
            ("liquidations_per_spike_minute", liquidations_per_spike_minute),
            ("background_liquidations_per_hour", background_liquidations_per_hour),
        ):
            positive(name, v, zero_ok=True)
        if spikes_per_day > 288:
            raise ValueError(f"spikes_per_day must be <= 288 (one per 5 minutes), got {spikes_per_day}")
        if volume_median >= volume_per_minute:
            raise ValueError("volume_median must be below volume_per_minute (volume is right-skewed)")
        if not 0 < taker_buy_share < 1:
            raise ValueError(f"taker_buy_share must be in (0, 1), got {taker_buy_share}")
        if not 0 < spike_pct[0] <= spike_pct[1] < 50:
            raise ValueError(
                f"spike_pct must be (low, high) percent with 0 < low <= high < 50, got {spike_pct}"
            )
        if not 1 <= spike_minutes[0] <= spike_minutes[1] <= 60:
            raise ValueError(
                f"spike_minutes must be (low, high) with 1 <= low <= high <= 60, got {spike_minutes}"
            )

        self.seed = seed
        self.spikes_per_day = float(spikes_per_day)
        self.trades_per_minute = float(trades_per_minute)
        self.minute_return_std = float(minute_return_std)
        self.taker_buy_share = float(taker_buy_share)
        self.taker_share_slope = float(taker_share_slope)
        self.spike_pct = (float(spike_pct[0]), float(spike_pct[1]))
        self.spike_minutes = (int(spike_minutes[0]), int(spike_minutes[1]))
        self.liquidations_per_spike_minute = float(liquidations_per_spike_minute)
        self.background_liquidations_per_hour = float(background_liquidations_per_hour)
        self.tick_size = float(tick_size)
        self.lot_size = float(lot_size)
        self._rng = np.random.Generator(np.random.PCG64(seed))

        # Base sigma so the stationary regime mix plus the spikes has the target per-minute std (drift counts as
        # variance). The spikes' share is taken out of the background first: the real file's std includes its own
        # spikes, so adding ours on top of a fully calibrated background overstated volatility (x3.4 at 24 a day,
        # the 0.16 % measured on the desk's candles). Beyond half the target variance the spikes cannot be
        # absorbed without flattening the background; then the background keeps half and the total std is
        # higher than calibrated, by `expected_return_std / minute_return_std` (a demo rate, not the market).
        pi = _stationary(_TRANSITIONS)
        spike_var = self.spike_variance_per_minute()
        base_var = max(minute_return_std**2 - spike_var, 0.5 * minute_return_std**2)
        self._sigma = math.sqrt(base_var / float(pi @ (_VOL_MULT**2 + _DRIFT_SIGMAS**2)))
        self.expected_return_std = math.sqrt(base_var + spike_var)
        self.calibrated = spike_var <= 0.5 * minute_return_std**2
        self._mean_abs_shock = float(pi @ _VOL_MULT) * math.sqrt(2 / math.pi)
        # Volume: lognormal; its log-std is what remains of the measured dispersion (mean/median) after
        # the activity and regime factors' own spread (_ACTIVITY_LOG_STD, tuned with benchmarks/calibrate_sim.py).
        # Each regime also trades its own amount (real minutes bucketed by trailing volatility: calm 0.53x,
        # normal 1.09x, volatile 2.6x the mean volume); without it volume followed only the minute's own move and
        # the volatile regime traded half the real volume (benchmarks/calibrate_sim.py, per regime). Normalised
        # so the stationary mean of regime factor x activity is 1.
        g = _VOL_MULT**_REGIME_VOLUME_POWER
        act = _ACTIVITY_FLOOR + (1 - _ACTIVITY_FLOOR) * _VOL_MULT / float(pi @ _VOL_MULT)
        self._regime_volume = g / float(pi @ (g * act))
        total_log_std = math.sqrt(2 * math.log(volume_per_minute / volume_median))
        self._vol_log_std = math.sqrt(max(total_log_std**2 - _ACTIVITY_LOG_STD**2, 0.05))
        mean_d = (self.spike_minutes[0] + self.spike_minutes[1]) / 2
        spike_extra = self.spikes_per_day / 1440 * (mean_d * (4.5 - 1) + 10 * (_REVERSION_VOLUME - 1))
        self._vol_scale = volume_per_minute / (math.exp(self._vol_log_std**2 / 2) * (1 + spike_extra))

        self._minute_ms = start_ms // MINUTE_MS * MINUTE_MS  # next minute to generate
        self._log_mid = math.log(start_price)
        self._regime = 0
        self._seq = 0
        self._spike: tuple[int, float, int, float] | None = None  # (dir, drift/min, minutes left, vol mult)
        self._reversion: tuple[float, int] | None = None  # (drift/min, minutes left)
        self._spike_total = (0, 0.0)  # (dir, log move) of the last spike
        self._price_inv = _grid_inverse(self.tick_size)
        self._lot_inv = _grid_inverse(self.lot_size)
        self._next_spike_minute = self._draw_gap(0.0)
        self._minute_index = 0
        self._trades: list[Trade] = []
        self._liqs: list[Liquidation] = []
        self.spikes: list[SpikeEvent] = []
        self.now_ms = start_ms
        self.last_price = float(start_price)

    def spike_variance_per_minute(self) -> float:
        """Expected contribution of the spike process to the per-minute return variance.

        A spike of log size L over d minutes adds d x (L/d)^2 = L^2/d to the sum of squared minute returns, its
        reversion (fraction f over m minutes) (fL)^2/m; spikes start at `spikes_per_day` per 1440 minutes.
        Expectations over the uniform draws below (magnitude, duration, fraction, reversion minutes).
        """
        lo, hi = self.spike_pct
        mags = np.log1p(np.linspace(lo, hi, 101) / 100)
        e_l2 = float(np.mean(mags**2))
        e_inv_d = float(np.mean(1.0 / np.arange(self.spike_minutes[0], self.spike_minutes[1] + 1)))
        e_f2 = float(np.mean(np.linspace(0.3, 0.6, 101) ** 2))
        e_inv_m = float(np.mean(1.0 / np.arange(5, 16)))
        return self.spikes_per_day / 1440 * e_l2 * (e_inv_d + e_f2 * e_inv_m)

    @property
    def regime(self) -> str:
        """Regime of the last generated minute."""
        return REGIMES[self._regime]

    def advance(self, until_ms: int) -> tuple[list[Trade], list[Liquidation]]:
        """All trades and liquidations with ts_ms <= until_ms not returned before, in time order."""
        while self._minute_ms <= until_ms:
            self._generate_minute()
        self.now_ms = max(self.now_ms, until_ms)
        return self._release(self._trades, until_ms, "_trades"), self._release(self._liqs, until_ms, "_liqs")

    # -- internals -----------------------------------------------------------------------------------
    def _release(self, buf: list, until_ms: int, attr: str) -> list:
        k = 0
        while k < len(buf) and buf[k].ts_ms <= until_ms:
            k += 1
        out, rest = buf[:k], buf[k:]
        setattr(self, attr, rest)
        return out

    @staticmethod
    def _to_grid(x: np.ndarray, inv: float | None, step: float) -> np.ndarray:
        """Round to the tick/lot grid (dividing by an integer 1/step gives the double nearest the decimal)."""
        if inv is not None:
            return np.round(x * inv) / inv
        return np.round(x / step) * step

    def _draw_gap(self, after_minute: float) -> float:
        """Minute at which the next spike may start: mean start-to-start spacing is 1440/spikes_per_day."""
        if self.spikes_per_day <= 0:
            return math.inf
        mean_d = (self.spike_minutes[0] + self.spike_minutes[1]) / 2
        mean_gap = max(1440.0 / self.spikes_per_day - mean_d, 1.0)
        return after_minute + float(self._rng.exponential(mean_gap))

    def _generate_minute(self) -> None:
        rng = self._rng
        t0 = self._minute_ms
        k = self._minute_index
        step = int(np.searchsorted(_CUM_TRANSITIONS[self._regime], rng.random(), side="right"))
        self._regime = min(step, 3)

        # spike schedule
        if self._spike is None and k >= self._next_spike_minute:
            lo, hi = self.spike_pct
            mag = float(rng.uniform(lo, hi)) / 100
            dur = int(rng.integers(self.spike_minutes[0], self.spike_minutes[1] + 1))
            direction = 1 if rng.random() < 0.5 else -1
            vol_mult = float(rng.uniform(3.0, 6.0))
            self._spike = (direction, direction * math.log1p(mag) / dur, dur, vol_mult)
            self.spikes.append(SpikeEvent(t0, t0 + dur * MINUTE_MS, direction, mag))
            self._spike_total = (direction, math.log1p(mag))
        spike_drift, vol_event, liq_rate, liq_side = 0.0, 1.0, 0.0, ""
        if self._spike is not None:
            direction, spike_drift, left, vol_event = self._spike
            liq_rate = self.liquidations_per_spike_minute
            liq_side = "short" if direction > 0 else "long"  # an up-spike squeezes the shorts
            if left <= 1:
                self._spike = None
                d, total = self._spike_total
                frac = float(rng.uniform(0.3, 0.6))
                rev_min = int(rng.integers(5, 16))
                self._reversion = (-d * frac * total / rev_min, rev_min)
                self._next_spike_minute = self._draw_gap(k + 1)
            else:
                self._spike = (direction, spike_drift, left - 1, vol_event)
        rev_drift = 0.0
        if self._reversion is not None and spike_drift == 0.0:
            rev_drift, left = self._reversion
            vol_event = _REVERSION_VOLUME
            self._reversion = (rev_drift, left - 1) if left > 1 else None

        # minute return and volume
        reg = self._regime
        eps = float(rng.standard_normal())
        shock = _VOL_MULT[reg] * eps
        r = self._sigma * (_DRIFT_SIGMAS[reg] + shock) + spike_drift + rev_drift
        activity = _ACTIVITY_FLOOR + (1 - _ACTIVITY_FLOOR) * abs(shock) / self._mean_abs_shock
        lognormal = math.exp(self._vol_log_std * float(rng.standard_normal()))
        volume = self._vol_scale * lognormal * activity * vol_event * float(self._regime_volume[reg])
        a = self._log_mid
        b = a + r

        # trades on a Brownian bridge from a to b
        n = max(1, int(rng.poisson(self.trades_per_minute * activity * vol_event)))
        offs = np.sort(rng.integers(0, MINUTE_MS, size=n))
        u = offs / MINUTE_MS
        steps = np.diff(np.concatenate(([0.0], u, [1.0])))
        w = np.cumsum(np.sqrt(steps) * self._sigma * _VOL_MULT[reg] * rng.standard_normal(n + 1))
        path = a + w[:-1] - u * w[-1] + u * (b - a)
        prices = np.maximum(self._to_grid(np.exp(path), self._price_inv, self.tick_size), self.tick_size)
        p_buy = self.taker_buy_share + self.taker_share_slope * r / self.minute_return_std
        p_buy = min(max(p_buy, 0.05), 0.95)
        buys = rng.random(n) < p_buy
        sizes = np.exp(_SIZE_LOG_STD * rng.standard_normal(n))
        amounts = np.maximum(
            self._to_grid(volume * sizes / sizes.sum(), self._lot_inv, self.lot_size), self.lot_size
        )
        seq0 = self._seq
        self._seq += n
        self._trades.extend(
            Trade(t0 + o, p, q, "buy" if bb else "sell", str(seq0 + i))
            for i, (o, p, q, bb) in enumerate(
                zip(offs.tolist(), prices.tolist(), amounts.tolist(), buys.tolist(), strict=True)
            )
        )

        # liquidations: bursts during spikes (squeezed side), rare background ones (either side)
        n_liq = min(int(rng.poisson(liq_rate)), 60) if liq_rate > 0 else 0
        bg = self.background_liquidations_per_hour / 60
        n_bg = min(int(rng.poisson(bg)), 60 - n_liq) if bg > 0 else 0
        total = n_liq + n_bg
        if total:
            secs = np.sort(rng.choice(60, size=total, replace=False))  # <= 1 per second (Binance throttle)
            ms = secs * 1000 + rng.integers(0, 1000, size=total)
            order = rng.permutation(total)  # which of the slots are background ones
            sides = [liq_side] * n_liq + ["long" if x else "short" for x in (rng.random(n_bg) < 0.5).tolist()]
            liq_amounts = _LIQ_SIZE_MEDIAN * np.exp(_LIQ_SIZE_LOG_STD * rng.standard_normal(total))
            liq_prices = np.exp(
                np.interp(ms / MINUTE_MS, np.concatenate(([0.0], u, [1.0])), np.concatenate(([a], path, [b])))
            )
            liq_prices = self._to_grid(liq_prices, self._price_inv, self.tick_size)
            liq_amounts = np.maximum(self._to_grid(liq_amounts, self._lot_inv, self.lot_size), self.lot_size)
            for j in range(total):
                self._liqs.append(
                    Liquidation(
                        ts_ms=t0 + int(ms[j]),
                        side=sides[int(order[j])],
                        price=float(liq_prices[j]),
                        amount=float(liq_amounts[j]),
                    )
                )

        self._log_mid = b
        self.last_price = float(prices[-1])
        self._minute_ms += MINUTE_MS
        self._minute_index += 1
