"""Liquidation hunter v2: trade REAL liquidation cascades (forced orders), confirmed by CVD, gated by trend.

The prototype's "liquidation hunters" (docs/prototype-notes.md §0.1, §3) never saw a liquidation: they
invented clusters at fixed leverages with random volumes and, by construction, were SHORT on ~99 % of
ticks. This ghost reads the bar columns `liq_long_volume` (longs liquidated = forced SELLS) and
`liq_short_volume` (shorts liquidated = forced BUYS), in base units, as built from the exchange's
force-order feed. NaN means "no liquidation feed for this minute": the ghost stays idle and says so; it
never reads missing data as "no liquidations" and never makes volumes up.

Pipeline, per bar t (all windows in minutes of DATA time on a gap-aware minute grid):

1. notional per minute and side = liq volume (base) x close (quote/base). The bar carries no liquidation
   price; the close is inside the bar's range, and the recorded BTC force orders of 2025-06-23 all lie
   within their 1m bar's [low, high] +- 0.5 % (shared/data/README.md), so the error is below a bar range.
2. cascade window: the liquidated notional of one side over the last `window_minutes` (all of them must
   have a known feed).
3. rolling norm, made robust for a sparse, mostly-zero series: the mean per-minute notional of that side
   over the `norm_lookback_minutes` BEFORE the window (known-feed minutes only, at least
   `min_norm_minutes` of them), times window_minutes = the window's expected notional. A cascade needs
   window >= threshold = max(min_cascade_usd, norm_multiple x expected). The floor carries the decision
   when the norm is ~0 (most of the time: a mean of zeros times any multiple is zero, which would make a
   single $100 liquidation a "cascade"); the multiple carries it after recent heavy liquidations (a second
   wave must be far above the first's level to count again). A mean rather than a quantile: with >90 %
   zero minutes every quantile below the 90th is 0, so quantiles add nothing over the floor.
4. direction (`mode`):
   - "fade" (DEFAULT): trade AGAINST the cascade once it exhausts: after longs are liquidated (forced
     selling pushed the price down) go LONG; after shorts are liquidated go SHORT. Why the default: the
     ghost sees a cascade only when a 1-minute bar closes, i.e. after the forced orders have already hit
     the book; following then buys the end of a move made by orders that are, by definition, finished
     (a liquidated position cannot be liquidated twice), while the fade trades the gap those orders left
     in the book. The fade also waits for exhaustion measured on the real feed: the signal bar's own
     liquidated notional must have fallen to <= `exhaustion_ratio` of the window's peak minute, so it
     never steps in front of an accelerating cascade. (The prototype's architecture document describes
     this fade; its code did the opposite on invented data, §0.10.)
   - "follow": trade WITH the cascade (longs liquidated -> SHORT) on the first bar it is detected, for
     venues/instruments where cascades chain through stacked liquidation levels; kept as an option
     because the prototype's v1/v2 intended it.
5. CVD confirmation (apps.engine.cvd.cvd_state, taker-buy minus taker-sell volume):
   - fade LONG is confirmed by aggressive buying absorbing the flush: the signal bar's delta > 0, or a
     selling-exhaustion / bullish-divergence event inside the cascade window (mirror for a fade SHORT);
   - follow SHORT is confirmed when the window's summed delta is < 0 (aggressive sellers push with the
     forced sells) and no selling exhaustion appeared in the window (mirror for a follow LONG);
   - known CVD that does not confirm -> no trade;
   - CVD UNKNOWN (no taker split, e.g. freqtrade OHLCV downloads; delta NaN): with `require_cvd` False
     (default) the signal still fires, without the CVD confidence bonus, and its reason says "CVD
     unknown"; with `require_cvd` True it is refused with the reason "CVD unknown". Default False
     because the liquidation feed is the primary evidence and most stored history lacks a taker split;
     live bars built from trades always carry it, so live signals are normally confirmed or refused.
6. trend gate (apps.engine.trend.trend_state): allow_long / allow_short (both False while the trend
   filter is not warmed up or in extreme volatility); its size_mult_long/short scales the size.
7. one signal per cascade: a bar fires only when no other bar with the same trade side passed every
   gate within the previous `cooldown_minutes` (a finite-window rule, so the live window reproduces it
   exactly). A cascade of the other side is a new event and may fire at once.

Levels (entry = the signal bar's close, a reference; the fill is the next open, apps.engine.exits): the
prototype's 1.2 % take-profit and 1.2 % stop at typical volatility, scaled by volatility:
scale = clip(atr_pct / ref_atr_pct, atr_scale_min, atr_scale_max), where atr_pct is a FINITE-window ATR
(mean 1m true range over `atr_minutes`, % of close; no Wilder recursion, so live == backtest). This caps
the prototype's uncapped volatility multiplier (its own TODO).

confidence = min(1, own + 0.1 x trend confidence when the trend direction agrees with the trade), where
own = 0.5 + 0.3 x clip((window / threshold - 1) / 3, 0, 1) + 0.2 x [CVD confirmed]
(0.5 for a bare cascade at its threshold, +0.3 at 4x the threshold: cascades are heavy-tailed).
size_mult = trend size_mult_<side> x (0.5 + 0.5 x own) x min(1, 1 / scale): confidence enters once
(the trend multiplier already holds the trend's confidence; the prototype counted it twice, §3.3.6),
and the size shrinks when the ATR-scaled stop widens, keeping the risk per trade roughly constant.

`evaluate` is causal and vectorised over bars; only the candidate bars (window >= min_cascade_usd: a
handful per day on real feeds) get reason texts, built per outcome in bulk (`_write_reasons`), and the
norm sums add only the minutes with liquidations (the same float sums: adding a zero minute changes
nothing). trend_state/cvd_state are evaluated only on short time
segments ending at cascade bars (each at least its own warmup long), or taken from the caller
(`trend=` / `cvd=` keyword arguments) so a runner evaluating several ghosts computes them once.
"""

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from apps.engine import cvd as cvd_mod
from apps.engine import trend as trend_mod
from apps.engine.bars import validate_bars
from apps.engine.types import ConfigError, GhostConfig, check_range, drafts_frame, idle_draft_arrays, idle_drafts

MODES = ("fade", "follow")
_DAY_MIN = 24 * 60
NO_FEED_REASON = "no liquidation feed (liq_long_volume/liq_short_volume NaN) -> idle"
# More segments than this (or segments covering half the bars): evaluate a gate state on all bars once.
_MAX_SEGMENTS = 8


@dataclasses.dataclass(frozen=True)
class LiquidationHunterConfig(GhostConfig):
    """Validated parameters of the liquidation hunter; percentages are in percent (1.2 means 1.2 %).

    Fields (unit; default; source):
    - mode ("fade" | "follow"; "fade"; new, see the module docstring for why): fade trades against an
      exhausted cascade, follow trades with it.
    - window_minutes (minutes of data time; 3; new): the cascade window; the liquidated notional of one
      side over it is compared with the threshold. At least 2, so "fade" can see the cascade slow down.
    - norm_lookback_minutes (minutes of data time; 60; new): the norm is the mean per-minute liquidated
      notional over this span BEFORE the window.
    - min_norm_minutes (minutes; 10; new): known-feed minutes the lookback must hold, else no norm and no
      signal (a feed that just started has no history to be "far above").
    - norm_multiple (ratio; 5.0; new, "far above its rolling norm"): window must reach this multiple of
      the norm's expected window notional.
    - min_cascade_usd (quote currency, USDT; 100000; new): floor of the threshold. BTCUSDT-sized: the
      125 BTCUSDT force orders in the four recorded Binance files (shared/data/liquidations) have a median
      of $1.8k and a 90th percentile of $43k, so ordinary liquidations never make a cascade (only the
      very largest single orders, max $159k, come near it alone). Binance throttles the feed to one
      order per symbol per second, so recorded notionals are lower bounds. Scale it for other markets.
    - exhaustion_ratio (fraction 0..1; 0.5; new; fade only): the signal bar's own liquidated notional must
      be <= this fraction of the window's peak minute (the forced flow has at least halved).
    - require_cvd (bool; False; new): refuse signals whose CVD is unknown (no taker split) instead of
      firing them unconfirmed.
    - use_trend_filter (bool; True; prototype v2's trend gate): gate sides with trend_state and scale the
      size by its size_mult_*; False = no gate, multiplier 1.
    - take_profit_pct (% of entry; 1.2; prototype `take_profit_pct`): target distance at ref volatility.
    - stop_loss_pct (% of entry; 1.2; prototype `stop_loss_pct`): stop distance at ref volatility.
    - atr_minutes (minutes of data time; 14; prototype `atr_period` 14): finite ATR window.
    - ref_atr_pct (% of close; 0.04; measured): the typical 14-minute 1m ATR of BTC/USDT (median 0.035 %
      on the 90-day spot file, 0.044 % on the 30-day USDT-M perp file); at this ATR the levels are the
      prototype's 1.2 %.
    - atr_scale_min / atr_scale_max (ratio; 0.5 / 1.5; new): clip of atr_pct / ref_atr_pct, so levels stay
      within 0.6 %..1.8 % with the defaults (the prototype's multiplier was uncapped).
    - cooldown_minutes (minutes of data time; 30; = max hold): one signal per cascade (per trade side).
    - max_hold_seconds (seconds of data time; 1800; prototype `max_hold_time`): time stop.
    - priority (integer; 3; new): tie-break weight for the signal manager (above the spike fader's 2:
      a real forced-order event is rarer and more specific than a price spike).
    """

    KIND: ClassVar[str] = "liquidation_hunter"

    mode: str = "fade"
    window_minutes: int = 3
    norm_lookback_minutes: int = 60
    min_norm_minutes: int = 10
    norm_multiple: float = 5.0
    min_cascade_usd: float = 100_000.0
    exhaustion_ratio: float = 0.5
    require_cvd: bool = False
    use_trend_filter: bool = True
    take_profit_pct: float = 1.2
    stop_loss_pct: float = 1.2
    atr_minutes: int = 14
    ref_atr_pct: float = 0.04
    atr_scale_min: float = 0.5
    atr_scale_max: float = 1.5
    cooldown_minutes: int = 30
    max_hold_seconds: float = 1800.0
    priority: int = 3

    def __post_init__(self) -> None:
        k = self.KIND
        if self.mode not in MODES:
            raise ConfigError(f"{k}.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("window_minutes", "norm_lookback_minutes", "min_norm_minutes", "atr_minutes",
                     "cooldown_minutes", "priority"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{k}.{name} must be an integer, got {v!r}")
        for name in ("require_cvd", "use_trend_filter"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ConfigError(f"{k}.{name} must be true or false, got {v!r}")
        check_range(k, "window_minutes", self.window_minutes, 2, 60, unit="minutes")
        check_range(k, "norm_lookback_minutes", self.norm_lookback_minutes, 5, 7 * _DAY_MIN, unit="minutes")
        check_range(k, "min_norm_minutes", self.min_norm_minutes, 1, 7 * _DAY_MIN, unit="minutes")
        if self.min_norm_minutes > self.norm_lookback_minutes:
            raise ConfigError(f"{k}.min_norm_minutes ({self.min_norm_minutes}) cannot exceed "
                              f"norm_lookback_minutes ({self.norm_lookback_minutes})")
        check_range(k, "norm_multiple", self.norm_multiple, 1, 1000, unit="x the norm")
        check_range(k, "min_cascade_usd", self.min_cascade_usd, 0, 1e12, lo_open=True, unit="quote currency")
        check_range(k, "exhaustion_ratio", self.exhaustion_ratio, 0, 1, lo_open=True,
                    unit="fraction of the peak minute")
        check_range(k, "take_profit_pct", self.take_profit_pct, 0, 50, lo_open=True, hi_open=True,
                    unit="percent")
        check_range(k, "stop_loss_pct", self.stop_loss_pct, 0, 50, lo_open=True, hi_open=True, unit="percent")
        check_range(k, "atr_minutes", self.atr_minutes, 2, _DAY_MIN, unit="minutes")
        check_range(k, "ref_atr_pct", self.ref_atr_pct, 0, 20, lo_open=True, unit="percent")
        check_range(k, "atr_scale_min", self.atr_scale_min, 0, 1, lo_open=True, unit="ratio")
        check_range(k, "atr_scale_max", self.atr_scale_max, 1, 20, unit="ratio")
        if self.stop_loss_pct * self.atr_scale_max >= 50 or self.take_profit_pct * self.atr_scale_max >= 50:
            raise ConfigError(f"{k}: stop_loss_pct/take_profit_pct x atr_scale_max must stay below 50 %")
        check_range(k, "cooldown_minutes", self.cooldown_minutes, 1, 7 * _DAY_MIN, unit="minutes")
        check_range(k, "max_hold_seconds", self.max_hold_seconds, 60, 7 * 86400, unit="seconds")
        check_range(k, "priority", self.priority, 0, 100)

    @property
    def own_lookback_minutes(self) -> int:
        """Minutes of history the liquidation and ATR windows of one bar reach back (bar included)."""
        return max(self.window_minutes + self.norm_lookback_minutes, self.atr_minutes + 1)

    @property
    def warmup_minutes(self) -> int:
        """History (minutes) a live window needs so its last row equals the full-history evaluation.

        Every bar inside the cooldown span before t must itself be exact, so: the longest lookback of
        one bar (own windows, trend_state's warmup, cvd_state's warmup + the cascade window over which
        CVD events are read) plus cooldown_minutes.
        """
        per_bar = max(self.own_lookback_minutes, _cvd_warmup() + self.window_minutes)
        if self.use_trend_filter:
            per_bar = max(per_bar, _trend_warmup())
        return per_bar + self.cooldown_minutes + 1


def _trend_warmup() -> int:
    """History trend_state needs with its default config (the gate uses the defaults)."""
    return int(trend_mod.TrendConfig().warmup_minutes)


def _cvd_warmup() -> int:
    """History cvd_state needs with its default config."""
    return int(cvd_mod.CvdConfig().warmup_minutes)


# ----------------------------------------------------------------------------------------------- grid

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _epoch_seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Open times as integer epoch seconds (bars are whole minutes; cheaper than as_unit("s"))."""
    return index.asi8 // _PER_SECOND[index.unit]


def _grid(index: pd.DatetimeIndex, pad: int) -> tuple[np.ndarray, int]:
    """Positions of the bars on a gap-free minute grid that starts `pad` minutes before the first bar.

    A window of N minutes is then a fixed slice of the grid whatever gaps the data has, and each bar's
    window sum is accumulated in the same order however long the series is (bit-identical live/backtest).
    """
    minutes = _epoch_seconds(index) // 60
    pos = (minutes - minutes[0] + pad).astype(np.int64)
    return pos, int(pos[-1]) + 1


def _on_grid(values: np.ndarray, pos: np.ndarray, size: int, fill: float = np.nan) -> np.ndarray:
    g = np.full(size, fill, dtype=np.float64)
    g[pos] = values
    return g


def _window_sum(grid: np.ndarray, pos: np.ndarray, start: int, length: int) -> np.ndarray:
    """Sum of grid[pos-start-length+1 .. pos-start] in a fixed order; NaN if any minute is NaN."""
    total = np.zeros(len(pos))
    if len(pos) and pos[-1] - pos[0] == len(pos) - 1:  # consecutive minutes: shifted views, no gathers
        for k in range(start, start + length):
            total += grid[pos[0] - k:pos[-1] - k + 1]
        return total
    for k in range(start, start + length):
        total += grid[pos - k]
    return total


def _known_mean(grid: np.ndarray, pos: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum over finite minutes, number of finite minutes) of grid[pos-start-length+1 .. pos-start].

    The sum is accumulated from 0.0 minute by minute, from pos-start back to pos-start-length+1 (the
    order fixes the float result). Adding 0.0 (a quiet minute, or an unknown one) never changes a sum
    that starts at +0.0, so only the finite non-zero minutes (sparse: liquidations are rare) are added,
    in that same order: the same bits at a fraction of the work. Counts are exact integer prefix sums.
    """
    finite = np.isfinite(grid)
    cs = np.empty(len(grid) + 1, dtype=np.int64)
    cs[0] = 0
    np.cumsum(finite, out=cs[1:])
    hi = pos - start + 1  # window = grid[hi - length: hi]
    count = cs[hi] - cs[hi - length]
    nz = np.flatnonzero(finite & (grid != 0))
    vals = grid[nz]
    a = np.searchsorted(nz, hi - length, "left")
    b = np.searchsorted(nz, hi, "left")  # nz[a:b] lie in the window; added from b - 1 down to a
    total = np.zeros(len(pos))
    todo = np.flatnonzero(b > a)
    k = 1
    while len(todo):
        total[todo] += vals[b[todo] - k]
        k += 1
        todo = todo[b[todo] - k >= a[todo]]
    return total, count


# ----------------------------------------------------------------------------------- cascade detection

@dataclasses.dataclass
class _Cascades:
    """Per-bar detection arrays (length n) plus grid data needed by evaluate."""

    notional_long: np.ndarray      # USD liquidated longs in the bar's minute (NaN: no feed)
    notional_short: np.ndarray
    window_long: np.ndarray        # USD over the cascade window (NaN: window not fully known)
    window_short: np.ndarray
    cand: np.ndarray               # bar rows where either window >= min_cascade_usd
    threshold_long: np.ndarray     # at cand rows
    threshold_short: np.ndarray
    norm_minutes_long: np.ndarray  # at cand rows: known-feed minutes in the norm lookback
    norm_minutes_short: np.ndarray
    peak_long: np.ndarray          # at cand rows: largest single minute inside the window
    peak_short: np.ndarray
    side: np.ndarray               # at cand rows: +1 longs liquidated, -1 shorts, 0 none
    pos: np.ndarray                # grid position of every bar
    size: int


def _detect(bars: pd.DataFrame, cfg: LiquidationHunterConfig) -> _Cascades:
    """Cascade detection on validated bars (see the module docstring, steps 1-3)."""
    close = bars["close"].to_numpy()
    n_long = bars["liq_long_volume"].to_numpy() * close
    n_short = bars["liq_short_volume"].to_numpy() * close
    w, lb = cfg.window_minutes, cfg.norm_lookback_minutes
    pad = max(cfg.own_lookback_minutes, cfg.cooldown_minutes) + 1
    pos, size = _grid(bars.index, pad)
    g_long, g_short = _on_grid(n_long, pos, size), _on_grid(n_short, pos, size)
    win_long = _window_sum(g_long, pos, 0, w)
    win_short = _window_sum(g_short, pos, 0, w)
    with np.errstate(invalid="ignore"):
        cand = np.flatnonzero((win_long >= cfg.min_cascade_usd) | (win_short >= cfg.min_cascade_usd))
    pc = pos[cand]
    out: dict[str, np.ndarray] = {}
    ratios = []
    for name, g, win in (("long", g_long, win_long), ("short", g_short, win_short)):
        s, cnt = _known_mean(g, pc, w, lb)
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan) * w
        thr = np.fmax(cfg.min_cascade_usd, cfg.norm_multiple * expected)  # fmax: NaN norm -> floor shown
        peak = np.full(len(pc), -np.inf)
        for k in range(w):
            peak = np.fmax(peak, g[pc - k])
        wc = win[cand]
        with np.errstate(invalid="ignore"):
            hit = (cnt >= cfg.min_norm_minutes) & (wc >= thr)
        ratios.append(np.where(hit, wc / thr, 0.0))
        out[f"thr_{name}"], out[f"cnt_{name}"], out[f"peak_{name}"] = thr, cnt, peak
    r_long, r_short = ratios
    side = np.where((r_long > 0) & (r_long >= r_short), 1, np.where(r_short > 0, -1, 0)).astype(np.int8)
    return _Cascades(n_long, n_short, win_long, win_short, cand, out["thr_long"], out["thr_short"],
                     out["cnt_long"], out["cnt_short"], out["peak_long"], out["peak_short"], side, pos, size)


def cascade_state(bars: pd.DataFrame, cfg: LiquidationHunterConfig | None = None) -> pd.DataFrame:
    """Per-bar liquidation state, same index as `bars` (for tests, the UI and state_summary).

    Columns: long_usd / short_usd (liquidated notional in the bar's minute, quote currency; NaN = no
    feed), long_window_usd / short_window_usd (over the last window_minutes; NaN unless every minute of
    the window has a feed), long_threshold_usd / short_threshold_usd (the cascade threshold; computed
    only where a window reaches min_cascade_usd, NaN elsewhere), cascade (int8: +1 longs liquidated,
    -1 shorts liquidated, 0 none), feed (bool: the bar's liquidation volumes are known). Causal.
    """
    cfg = cfg or LiquidationHunterConfig()
    bars = validate_bars(bars)
    n = len(bars)
    if n == 0:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _STATE_DTYPES.items()}, index=bars.index)
    d = _detect(bars, cfg)
    thr_l, thr_s, casc = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int8)
    thr_l[d.cand], thr_s[d.cand], casc[d.cand] = d.threshold_long, d.threshold_short, d.side
    feed = np.isfinite(d.notional_long) & np.isfinite(d.notional_short)
    return pd.DataFrame({"long_usd": d.notional_long, "short_usd": d.notional_short,
                         "long_window_usd": d.window_long, "short_window_usd": d.window_short,
                         "long_threshold_usd": thr_l, "short_threshold_usd": thr_s,
                         "cascade": casc, "feed": feed}, index=bars.index)


_STATE_DTYPES = {"long_usd": "float64", "short_usd": "float64", "long_window_usd": "float64",
                 "short_window_usd": "float64", "long_threshold_usd": "float64",
                 "short_threshold_usd": "float64", "cascade": "int8", "feed": "bool"}


# ------------------------------------------------------------------------------ trend / cvd on segments

def _state_on_segments(fn: Any, bars: pd.DataFrame, rows: np.ndarray, span_minutes: int) -> pd.DataFrame:
    """fn(bars) evaluated only on time segments [t - span_minutes + 1 min, t] around `rows`, merged.

    Exact for every row within a segment that has >= the state's warmup of history in it, which the
    caller guarantees by its choice of span (the state functions are finite-window by contract, so
    their value at such a row is the full-history value; the same holds when many segments make one
    evaluation over all bars cheaper). Rows outside every segment may be absent from the result.
    """
    idx = bars.index
    secs = _epoch_seconds(idx)
    t_end = secs[rows]
    t_start = t_end - (span_minutes - 1) * 60
    segs: list[list[int]] = []
    for a, b in zip(t_start.tolist(), t_end.tolist(), strict=True):  # rows are sorted: one merge pass
        if segs and a <= segs[-1][1] + 60:
            segs[-1][1] = max(segs[-1][1], b)
        else:
            segs.append([a, b])
    covered = sum(min(b, int(secs[-1])) - max(a, int(secs[0])) for a, b in segs) // 60
    if len(segs) > _MAX_SEGMENTS or covered > len(idx) // 2:
        # many cascades: one pass over everything is cheaper than many small ones, and equally exact
        return fn(bars)
    parts = []
    for a, b in segs:
        lo, hi = np.searchsorted(secs, a, "left"), np.searchsorted(secs, b, "right")
        parts.append(fn(bars.iloc[lo:hi]))
    return pd.concat(parts) if len(parts) > 1 else parts[0]


def _fmt_usd(x: float) -> str:
    """$523.8k / $1.25M / $930: quote-currency amounts in reasons."""
    a = abs(x)
    if a >= 1e6:
        return f"${x / 1e6:.2f}M" if a < math.inf else "n/a"
    if a >= 1e3:
        return f"${x / 1e3:.1f}k"
    return f"${x:.0f}" if a == a else "n/a"


# ------------------------------------------------------------------------------------------- evaluate

def evaluate(bars: pd.DataFrame, cfg: LiquidationHunterConfig, *, trend: pd.DataFrame | None = None,
             cvd: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-bar drafts (DRAFT_COLUMNS, same index as `bars`): +1 long / -1 short per the module docstring.

    `trend` / `cvd`: optional precomputed trend_state / cvd_state frames over the same bars (a runner
    that evaluates several ghosts computes them once); by default they are computed here, on segments.
    Reasons: every bar without a liquidation feed says so; every bar whose window reaches
    min_cascade_usd says what happened (below the norm, no norm yet, not exhausted, CVD, trend,
    cooldown, or the signal with its numbers); quiet bars with a feed have an empty reason.
    """
    bars = validate_bars(bars)
    n = len(bars)
    if n == 0:
        return idle_drafts(bars.index)
    no_feed = ~(np.isfinite(bars["liq_long_volume"].to_numpy()) & np.isfinite(bars["liq_short_volume"].to_numpy()))
    if no_feed.all():  # an OHLCV-only history: nothing to detect
        return idle_drafts(bars.index, NO_FEED_REASON)
    out = idle_draft_arrays(n)
    reasons = out["reason"]
    reasons[no_feed] = NO_FEED_REASON
    d = _detect(bars, cfg)
    if len(d.cand) == 0:
        return drafts_frame(bars.index, **out)

    w = cfg.window_minutes
    cand, cside = d.cand, d.side
    fade = cfg.mode == "fade"
    casc_rows = cand[cside != 0]
    trade = np.where(fade, cside, -cside).astype(np.int8)  # +1 long-liquidation cascade -> fade LONG
    own_notional = np.where(cside > 0, d.notional_long[cand], d.notional_short[cand])
    win = np.where(cside > 0, d.window_long[cand], d.window_short[cand])
    thr = np.where(cside > 0, d.threshold_long, d.threshold_short)
    peak = np.where(cside > 0, d.peak_long, d.peak_short)
    with np.errstate(invalid="ignore"):
        exhausted = own_notional <= cfg.exhaustion_ratio * peak

    # CVD at the cascade rows: the bar's delta, the window's summed delta and the window's events.
    delta_t = np.full(len(cand), np.nan)
    delta_w = np.full(len(cand), np.nan)
    ev_sell = np.zeros(len(cand), dtype=bool)  # selling exhaustion or bullish divergence in the window
    ev_buy = np.zeros(len(cand), dtype=bool)   # buying exhaustion or bearish divergence in the window
    sell_exh = np.zeros(len(cand), dtype=bool)
    buy_exh = np.zeros(len(cand), dtype=bool)
    if len(casc_rows):
        cv = cvd if cvd is not None else _state_on_segments(
            cvd_mod.cvd_state, bars, casc_rows, _cvd_warmup() + w)
        # rows of the bars at t, t-1 min, ..., t-(w-1) min for every candidate (-1: no bar that minute)
        row_of = np.full(d.size, -1, dtype=np.int64)
        row_of[d.pos] = np.arange(n)
        pc = d.pos[cand]
        back = np.stack([row_of[pc - k] for k in range(w)])
        read = np.zeros(n, dtype=bool)
        read[back[back >= 0]] = True
        need = np.flatnonzero(read)  # the rows the windows read, sorted and unique
        cvs = _rows(cv, bars.index, need)
        at = (np.cumsum(read) - 1)[np.maximum(back, 0)]  # position in `need` (masked below where back < 0)

        def lagged(col: str, fill: float | bool) -> np.ndarray:
            vals = cvs[col].to_numpy()
            if isinstance(fill, bool):
                vals = np.asarray(pd.Series(vals).fillna(False).to_numpy(), dtype=bool)
            else:
                vals = vals.astype(np.float64)
            return np.where(back >= 0, vals[at], fill)  # (w, candidates)

        dl = lagged("delta", np.nan)
        delta_t = dl[0]
        delta_w = np.zeros(len(cand))
        for k in range(w):  # fixed order, NaN (unknown or missing minute) propagates
            delta_w += dl[k]
        se, bu = lagged("selling_exhaustion", False), lagged("buying_exhaustion", False)
        bull, bear = lagged("bullish_divergence", False), lagged("bearish_divergence", False)
        sell_exh, buy_exh = se.any(axis=0), bu.any(axis=0)
        ev_sell, ev_buy = (se | bull).any(axis=0), (bu | bear).any(axis=0)
    if fade:
        cvd_known = np.isfinite(delta_t)
        confirmed = np.where(trade > 0, (delta_t > 0) | ev_sell, (delta_t < 0) | ev_buy)
    else:
        cvd_known = np.isfinite(delta_w)
        confirmed = np.where(trade < 0, (delta_w < 0) & ~sell_exh, (delta_w > 0) & ~buy_exh)
    confirmed &= cvd_known

    # Trend gate at the cascade rows.
    allow = np.ones(len(cand), dtype=bool)
    t_mult = np.ones(len(cand))
    t_conf = np.zeros(len(cand))
    t_dir = np.zeros(len(cand), dtype=np.int64)
    ready = np.zeros(len(cand), dtype=bool)
    regime = np.zeros(len(cand), dtype=np.int64)
    if cfg.use_trend_filter and len(casc_rows):
        ts = trend if trend is not None else _state_on_segments(
            trend_mod.trend_state, bars, casc_rows, _trend_warmup())
        ts = _rows(ts, bars.index, cand)
        al = ts["allow_long"].fillna(False).to_numpy(dtype=bool)
        ash = ts["allow_short"].fillna(False).to_numpy(dtype=bool)
        allow = np.where(trade > 0, al, ash)
        t_mult = np.where(trade > 0, ts["size_mult_long"].to_numpy(dtype=np.float64),
                          ts["size_mult_short"].to_numpy(dtype=np.float64))
        t_conf = np.nan_to_num(ts["confidence"].to_numpy(dtype=np.float64))
        t_dir = np.nan_to_num(ts["direction"].to_numpy(dtype=np.float64)).astype(np.int64)
        ready = ts["ready"].fillna(False).to_numpy(dtype=bool)
        regime = np.nan_to_num(ts["regime"].to_numpy(dtype=np.float64)).astype(np.int64)

    cvd_ok = confirmed | (~cvd_known & (not cfg.require_cvd))
    ok = (cside != 0) & (exhausted | (not fade)) & cvd_ok & allow
    pc = d.pos[cand]
    # same-side ok bars in (t - cooldown, t): candidates only (sorted, one per grid minute), as prefix counts
    first = np.searchsorted(pc, pc - (cfg.cooldown_minutes - 1), "left")
    here = np.arange(len(cand))
    recent_ok = np.zeros(len(cand), dtype=np.int64)
    for s_ in (1, -1):  # per trade side: a cascade of the other side is a new event, not a repeat
        csum = np.concatenate(([0], np.cumsum(ok & (trade == s_), dtype=np.int64)))
        recent_ok = np.where(trade == s_, csum[here] - csum[first], recent_ok)
    fire = ok & (recent_ok == 0)

    # Levels, confidence, size at the firing rows (vectorised).
    rows = cand[fire]
    close = bars["close"].to_numpy()
    if len(rows):
        s = trade[fire].astype(np.float64)
        entry = close[rows]
        atr_pct = _atr_pct(bars, d, rows, cfg, row_of)
        scale = np.clip(np.where(np.isfinite(atr_pct), atr_pct / cfg.ref_atr_pct, 1.0),
                        cfg.atr_scale_min, cfg.atr_scale_max)
        own = (0.5 + 0.3 * np.clip((win[fire] / thr[fire] - 1.0) / 3.0, 0.0, 1.0)
               + 0.2 * confirmed[fire])
        aligned = np.sign(t_dir[fire]) == s
        conf = np.minimum(1.0, own + 0.1 * t_conf[fire] * aligned)
        out["side"][rows] = trade[fire]
        out["confidence"][rows] = conf
        out["entry"][rows] = entry
        out["stop"][rows] = entry * (1 - s * cfg.stop_loss_pct * scale / 100)
        out["target"][rows] = entry * (1 + s * cfg.take_profit_pct * scale / 100)
        out["size_mult"][rows] = t_mult[fire] * (0.5 + 0.5 * own) * np.minimum(1.0, 1.0 / scale)
        out["max_hold_s"][rows] = float(cfg.max_hold_seconds)
        out["priority"][rows] = cfg.priority
    else:
        atr_pct = scale = np.zeros(0)

    _write_reasons(reasons, d, cfg, trade, win, thr, exhausted, own_notional, peak, delta_t if fade else delta_w,
                   cvd_known, confirmed, (ready, t_dir, regime, t_conf), allow, fire, atr_pct, scale)
    return drafts_frame(bars.index, **out)


def _rows(frame: pd.DataFrame, index: pd.DatetimeIndex, rows: np.ndarray) -> pd.DataFrame:
    """`frame.reindex(index[rows])`: by position when the frame is on `index` itself (the shared states
    are), else by label (segment states lack rows: those come out NaN)."""
    if frame.index is index or frame.index.equals(index):
        return frame.iloc[rows]
    return frame.reindex(index[rows])


def _obj(texts: list[str]) -> np.ndarray:
    """A list of str as an object array (assigned into the reasons without numpy's unicode detour)."""
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out


def _fmt_usd_many(x: np.ndarray) -> np.ndarray:
    """`_fmt_usd` of every value (object array of str): one list comprehension per magnitude class over
    Python floats, the same divisions and formats as _fmt_usd."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.empty(len(x), dtype=object)
    out.fill("n/a")  # NaN and +-inf
    with np.errstate(invalid="ignore"):
        mil = (a >= 1e6) & (a < np.inf)
        kil = (a >= 1e3) & (a < 1e6)
        one = a < 1e3
    if mil.any():
        out[mil] = _obj([f"${v:.2f}M" for v in (x[mil] / 1e6).tolist()])
    if kil.any():
        out[kil] = _obj([f"${v:.1f}k" for v in (x[kil] / 1e3).tolist()])
    if one.any():
        out[one] = _obj([f"${v:.0f}" for v in x[one].tolist()])
    return out


def _write_reasons(reasons: np.ndarray, d: _Cascades, cfg: LiquidationHunterConfig, trade: np.ndarray,
                   win: np.ndarray, thr: np.ndarray, exhausted: np.ndarray, own_notional: np.ndarray,
                   peak: np.ndarray, dval: np.ndarray, cvd_known: np.ndarray, confirmed: np.ndarray,
                   trend: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], allow: np.ndarray,
                   fire: np.ndarray, atr_pct: np.ndarray, scale: np.ndarray) -> None:
    """The reason of every candidate bar (its window reached min_cascade_usd), written into `reasons`.

    Arrays are per candidate (d.cand), except atr_pct / scale (per firing candidate). The texts are built
    per outcome in bulk, from Python scalars (numpy scalars format several times slower; a busy feed has
    ~1 % candidate bars): no cascade (norm missing or too high), still running (fade), CVD unknown and
    required, CVD does not confirm, trend blocks, cooldown, signal.
    """
    w, fade, cand, cside = cfg.window_minutes, cfg.mode == "fade", d.cand, d.side
    usd = _fmt_usd_many

    nc = np.flatnonzero(cside == 0)
    if len(nc):
        rows = cand[nc]
        sides = []
        for name, win_all, thr_c, cnt_c in (("long", d.window_long, d.threshold_long, d.norm_minutes_long),
                                            ("short", d.window_short, d.threshold_short, d.norm_minutes_short)):
            wv, tv, cv = win_all[rows], thr_c[nc], cnt_c[nc]
            with np.errstate(invalid="ignore"):
                has = np.isfinite(wv) & (wv >= cfg.min_cascade_usd)
            few = cv < cfg.min_norm_minutes
            part = np.full(len(nc), None, dtype=object)
            sel = has & few
            if sel.any():
                part[sel] = _obj([
                    f"{name}-liquidations {u} in {w} min but only {c} of {cfg.norm_lookback_minutes} norm "
                    f"minutes have a feed (need {cfg.min_norm_minutes})"
                    for u, c in zip(usd(wv[sel]).tolist(), cv[sel].tolist(), strict=True)])
            sel = has & ~few
            if sel.any():
                part[sel] = _obj([f"{name}-liquidations {u} in {w} min below {cfg.norm_multiple:g}x norm ({t})"
                                  for u, t in zip(usd(wv[sel]).tolist(), usd(tv[sel]).tolist(), strict=True)])
            sides.append(part.tolist())
        reasons[rows] = _obj([("; ".join(p for p in (a, b) if p is not None) if a is None or b is None
                               else f"{a}; {b}") + " -> no cascade" for a, b in zip(*sides, strict=True)])

    casc = np.flatnonzero(cside != 0)
    if len(casc) == 0:
        return
    wc, tc = win[casc], thr[casc]
    floor_s = _fmt_usd(cfg.min_cascade_usd)
    t_s = np.full(len(casc), floor_s, dtype=object)  # the threshold is the floor, mostly
    other = tc != cfg.min_cascade_usd
    if other.any():
        t_s[other] = usd(tc[other])
    who = np.array(["short-liquidation cascade ", "", "long-liquidation cascade "], dtype=object)[cside[casc] + 1]
    floor_txt = f"max(floor {floor_s}, {cfg.norm_multiple:g}x norm)"
    head = _obj([f"{h}{u} in {w} min (threshold {t} = {floor_txt}, x{r:.1f})" for h, u, t, r in zip(
        who.tolist(), usd(wc).tolist(), t_s.tolist(), (wc / tc).tolist(), strict=True)])
    verb = "fade " if fade else "follow "
    act_side = np.array(["SHORT", "", "LONG"], dtype=object)[trade[casc] + 1]
    act = np.array([verb + "SHORT", "", verb + "LONG"], dtype=object)[trade[casc] + 1]
    dname = "bar delta" if fade else f"{w}-min delta"
    rows = cand[casc]

    def put(at: np.ndarray, texts: list[str]) -> None:
        reasons[at] = _obj(texts)

    running = ~exhausted[casc] if fade else np.zeros(len(casc), dtype=bool)
    if running.any():
        put(rows[running], [
            f"{h} still running: this minute {o} > {cfg.exhaustion_ratio:g} x peak {p} -> wait for exhaustion"
            for h, o, p in zip(head[running].tolist(), usd(own_notional[casc][running]).tolist(),
                               usd(peak[casc][running]).tolist(), strict=True)])
    known, conf = cvd_known[casc], confirmed[casc]
    refused = ~running & ~known & cfg.require_cvd
    if refused.any():
        put(rows[refused], [f"{h}; CVD unknown (no taker split) and require_cvd -> no trade"
                             for h in head[refused].tolist()])
    unconfirmed = ~running & known & ~conf
    dv = dval[casc]
    if unconfirmed.any():
        put(rows[unconfirmed], [f"{h}; CVD does not confirm {a} ({dname} {v:+.3f}) -> no trade" for h, a, v in zip(
            head[unconfirmed].tolist(), act[unconfirmed].tolist(), dv[unconfirmed].tolist(), strict=True)])
    passed = ~running & ~refused & ~unconfirmed  # CVD confirms, or unknown and not required
    if not passed.any():
        return
    pk = known[passed]
    cvd_txt = np.full(int(passed.sum()), "CVD unknown (no taker split), unconfirmed", dtype=object)
    if pk.any():
        cvd_txt[pk] = _obj([f"CVD confirms ({dname} {v:+.3f})" for v in dv[passed][pk].tolist()])
    ready, t_dir, regime, t_conf = (a[casc][passed] for a in trend)
    if not cfg.use_trend_filter:
        tdesc = np.full(len(cvd_txt), "trend filter off", dtype=object)
    else:
        tdesc = np.full(len(cvd_txt), "trend filter not warmed up", dtype=object)
        if ready.any():
            dn, rn = trend_mod.DIRECTION_NAMES, trend_mod.REGIME_NAMES
            tdesc[ready] = _obj([f"trend {dn.get(t, t)}/{rn.get(g, g)} conf {c:.2f}" for t, g, c in zip(
                t_dir[ready].tolist(), regime[ready].tolist(), t_conf[ready].tolist(), strict=True)])
    al, fr = allow[casc][passed], fire[casc][passed]
    hp, sp, rows = head[passed], act_side[passed], rows[passed]
    sel = ~al
    if sel.any():
        put(rows[sel], [f"{h}; {c}; {t} blocks {a} -> no trade" for h, c, t, a in zip(
            hp[sel].tolist(), cvd_txt[sel].tolist(), tdesc[sel].tolist(), sp[sel].tolist(), strict=True)])
    sel = al & ~fr
    if sel.any():
        put(rows[sel], [
            f"{h}; {c}; in cooldown (a {a} passed every gate within {cfg.cooldown_minutes} min before) -> no trade"
            for h, c, a in zip(hp[sel].tolist(), cvd_txt[sel].tolist(), sp[sel].tolist(), strict=True)])
    sel = al & fr  # == fire at the cascade rows: in the order of atr_pct / scale
    if sel.any():
        atr_txt = [f"ATR {a:.3f}% -> levels x{c:.2f}" if math.isfinite(a) else "ATR unknown -> base levels"
                   for a, c in zip(atr_pct.tolist(), scale.tolist(), strict=True)]
        put(rows[sel], [f"{h}; {c}; {t}; {x} -> {a}" for h, c, t, x, a in zip(
            hp[sel].tolist(), cvd_txt[sel].tolist(), tdesc[sel].tolist(), atr_txt, act[passed][sel].tolist(),
            strict=True)])


def _atr_pct(bars: pd.DataFrame, d: _Cascades, rows: np.ndarray, cfg: LiquidationHunterConfig,
             row_of: np.ndarray) -> np.ndarray:
    """Finite-window ATR at `rows`, % of close: mean 1m true range over atr_minutes of data time.

    True range uses the previous close only when that bar opened exactly one minute earlier (after a gap,
    high - low). NaN when fewer than half of the window's minutes hold bars.
    """
    # the bar (row) at each grid minute the windows read (row_of: the bar at each grid minute, -1 for none):
    # a few lookups instead of three full minute grids of high / low / close
    m = cfg.atr_minutes
    at = row_of[d.pos[rows][None, :] - np.arange(m + 1)[:, None]]  # minutes t, t-1, ..., t-m
    found = at >= 0
    at = np.where(found, at, 0)

    def on(col: str) -> np.ndarray:
        return np.where(found, bars[col].to_numpy()[at], np.nan)

    g_h, g_l, g_c = on("high"), on("low"), on("close")
    total = np.zeros(len(rows))
    count = np.zeros(len(rows))
    for k in range(m):
        h, lo, pc = g_h[k], g_l[k], g_c[k + 1]
        tr = np.fmax(h, pc) - np.fmin(lo, pc)
        ok = np.isfinite(tr)
        total += np.where(ok, tr, 0.0)
        count += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        atr = np.where(count >= m / 2, total / count, np.nan)
    return atr / bars["close"].to_numpy()[rows] * 100


def state_summary(bars: pd.DataFrame, cfg: LiquidationHunterConfig | None = None) -> dict[str, str]:
    """The ghosts page's view: liquidation feed status and the last cascade (time, side, notional)."""
    cfg = cfg or LiquidationHunterConfig()
    st = cascade_state(bars, cfg)
    if len(st) == 0:
        return {"feed": "no bars", "last_cascade": "none"}
    feed = "live" if bool(st["feed"].iloc[-1]) else "no liquidation feed"
    hits = np.flatnonzero(st["cascade"].to_numpy() != 0)
    if len(hits) == 0:
        return {"feed": feed, "last_cascade": "none in the window"}
    i = int(hits[-1])
    row = st.iloc[i]
    longs = int(row["cascade"]) > 0
    usd = row["long_window_usd"] if longs else row["short_window_usd"]
    return {"feed": feed,
            "last_cascade": f"{st.index[i]:%Y-%m-%d %H:%M} UTC",
            "last_cascade_side": "longs liquidated" if longs else "shorts liquidated",
            "last_cascade_notional": f"{_fmt_usd(float(usd))} in {cfg.window_minutes} min"}
