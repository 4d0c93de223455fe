"""Volatility spike fader: fade a sharp move of >= 1.2 % within 15 minutes of data time.

The correct version of the prototype's `volatility_spike_fader.py` (docs/prototype-notes.md §4). Its
parameters are the defaults here; its defects are fixed:

* the window is 15 minutes of DATA TIME: the reference close is the bar that opened exactly
  `window_minutes` earlier (no such bar, e.g. after a feed gap -> no move, no signal), where the
  prototype counted 15 samples and took the close 14 bars back;
* the unused `volume_threshold` becomes a real volume confirmation (mean volume inside the window vs
  the `volume_lookback_minutes` before it); missing volume (NaN) means no signal, never a guess;
* the stop sits beyond the spike's extreme (not 0.6 % from entry), and never closer than 0.6 %;
* the target never lies on the losing side of entry (the prototype's 30 %-level could, and closed the
  trade at once at a loss labelled "take_profit");
* cooldown and max hold are data time (the prototype's max hold used the wall clock);
* confidence is a continuous function of how far the move and the volume exceed their thresholds,
  not relics of the 3 % version.

`evaluate` is causal and vectorised: the output at bar t depends only on bars with open time <= t,
so the backtest (one call over the whole history) and live (one call over the trailing window, last
row) agree bar for bar; tests/engine check both properties.
"""

import dataclasses
import math
from typing import ClassVar

import numpy as np
import pandas as pd

from apps.engine.bars import validate_bars
from apps.engine.types import ConfigError, GhostConfig, check_range, drafts_frame, idle_draft_arrays

_PER_MINUTE = {"s": 60, "ms": 60_000, "us": 60_000_000, "ns": 60_000_000_000}

_WEEK_S = 7 * 24 * 3600
# Chain allowance for the live window (minutes): a candidate is blocked by the cooldown only if the
# previous candidate FIRED, so the live window must reach back to the start of the current run of
# candidates. The longest run of consecutive >= 1.2 %/15 min bars in the 90-day BTC/USDT 1m file
# (2025-05-20..08-18, benchmarks/calibrate_sim.py) is 14 minutes; 120 leaves a wide margin.
_CHAIN_ALLOWANCE_MIN = 120


@dataclasses.dataclass(frozen=True)
class SpikeFaderConfig(GhostConfig):
    """Validated parameters of the spike fader; percentages are in percent (1.2 means 1.2 %).

    Fields (unit; default; source):
    - spike_threshold_pct (% of the reference close; 1.2; prototype `spike_threshold`): |move| that counts
      as a spike.
    - window_minutes (minutes of data time; 15; prototype `spike_window`, which was 15 samples): the move
      is close_t / close(t - window) - 1.
    - take_profit_pct (% of entry; 0.8; prototype `base_take_profit_pct`): the percentage target.
    - retracement (fraction 0..1; 0.3; prototype "30 % retracement"): the structural target is the level
      `ref + retracement * (extreme - ref)`, i.e. the price that gives back (1 - retracement) = 70 % of the
      spike from its extreme. The target is the NEARER of that level and entry -/+ take_profit_pct, except
      that the level is ignored when it is beyond the entry or closer than min_target_pct to it.
    - min_target_pct (% of entry; 0.3; new): a target nearer than this cannot pay the round trip
      (binance spot: 2 x 0.1 % fee + 2 x 5 bps slippage = 0.3 %), so the percentage target is used instead.
    - stop_buffer_pct (% of the extreme; 0.1; new): the stop sits this far beyond the spike's extreme
      (window high for a short, window low for a long) so a retest of the extreme does not stop the trade.
      0.1 % is the 90th percentile of the 1-minute high-low range in the 90-day BTC/USDT file (median
      0.031 %), measured by benchmarks/calibrate_sim.py.
    - min_stop_pct (% of entry; 0.6; prototype `base_stop_loss_pct`): the stop is never closer than this.
    - min_volume_ratio (ratio; 1.5; replaces the prototype's unused `volume_threshold` 2.0 and its 1.5
      bonus step): mean volume of the bars inside the window / mean volume of the lookback before it.
    - volume_lookback_minutes (minutes of data time; 100; prototype's 100-sample volume history): at
      least half of these minutes must hold bars for the ratio to count.
    - cooldown_seconds (seconds of data time; 300; prototype `spike_cooldown`): no new signal within this
      long after the last signal (the prototype counted from the last *traded* spike; a ghost does not
      know what was traded, and keeping it pure keeps backtest and live identical).
    - max_hold_seconds (seconds of data time; 3600; prototype `max_hold_time`): time stop for the trade.
    - priority (integer; 2; new): tie-break weight for the signal manager, higher wins.
    """

    KIND: ClassVar[str] = "spike_fader"

    spike_threshold_pct: float = 1.2
    window_minutes: int = 15
    take_profit_pct: float = 0.8
    retracement: float = 0.3
    min_target_pct: float = 0.3
    stop_buffer_pct: float = 0.1
    min_stop_pct: float = 0.6
    min_volume_ratio: float = 1.5
    volume_lookback_minutes: int = 100
    cooldown_seconds: float = 300.0
    max_hold_seconds: float = 3600.0
    priority: int = 2

    def __post_init__(self) -> None:
        k = self.KIND
        check_range(k, "spike_threshold_pct", self.spike_threshold_pct, 0, 50, lo_open=True, hi_open=True,
                    unit="percent")
        for name in ("window_minutes", "volume_lookback_minutes", "priority"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{k}.{name} must be an integer, got {v!r}")
        check_range(k, "window_minutes", self.window_minutes, 1, 1440, unit="minutes")
        check_range(k, "take_profit_pct", self.take_profit_pct, 0, 50, lo_open=True, hi_open=True,
                    unit="percent")
        if self.take_profit_pct >= self.spike_threshold_pct:
            raise ConfigError(
                f"{k}.take_profit_pct ({self.take_profit_pct:g} %) must be below spike_threshold_pct "
                f"({self.spike_threshold_pct:g} %): a fade cannot expect more than the spike it fades")
        check_range(k, "retracement", self.retracement, 0, 1, hi_open=True, unit="fraction of the move")
        check_range(k, "min_target_pct", self.min_target_pct, 0, 50, unit="percent")
        if self.min_target_pct >= self.take_profit_pct:
            raise ConfigError(f"{k}.min_target_pct ({self.min_target_pct:g} %) must be below take_profit_pct "
                              f"({self.take_profit_pct:g} %)")
        check_range(k, "stop_buffer_pct", self.stop_buffer_pct, 0, 20, hi_open=True, unit="percent")
        check_range(k, "min_stop_pct", self.min_stop_pct, 0, 20, lo_open=True, hi_open=True, unit="percent")
        check_range(k, "min_volume_ratio", self.min_volume_ratio, 0, 50, lo_open=True,
                    unit="window mean volume / lookback mean volume")
        check_range(k, "volume_lookback_minutes", self.volume_lookback_minutes, 2, 10080, unit="minutes")
        check_range(k, "cooldown_seconds", self.cooldown_seconds, 0, _WEEK_S, unit="seconds")
        check_range(k, "max_hold_seconds", self.max_hold_seconds, 60, _WEEK_S, unit="seconds")
        check_range(k, "priority", self.priority, 0, 100)

    @property
    def warmup_minutes(self) -> int:
        """History (minutes) a live window needs so its last row equals the full-history evaluation."""
        return (self.window_minutes + self.volume_lookback_minutes
                + max(_CHAIN_ALLOWANCE_MIN, math.ceil(self.cooldown_seconds / 60) * 4))


def spike_moves(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.Series:
    """move_t = close_t / close(open_time_t - window_minutes) - 1, a fraction (0.012 = 1.2 %).

    The reference is looked up by TIME with an exact reindex: when the bar that opened exactly
    window_minutes earlier is missing (a feed gap, the start of the data), the move is NaN rather than
    measured over a different span. Causal: uses bar t and one earlier bar only.
    """
    close = bars["close"].to_numpy()
    return pd.Series(close / _ref_close(bars, cfg) - 1.0, index=bars.index, name="spike_move")


def _ref_close(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> np.ndarray:
    """Close of the bar that opened exactly window_minutes before each bar (NaN when absent)."""
    return close_minutes_ago(bars, cfg.window_minutes)


def close_minutes_ago(bars: pd.DataFrame, w: int) -> np.ndarray:
    """Close of the bar that opened exactly `w` minutes before each bar of validated `bars` (NaN when no bar
    opened then: a feed gap, the start of the data). Shared with the textbook fader."""
    # An exact lookup by time on the minute grid (validated bars are whole, strictly increasing minutes):
    # the same values as reindexing by `open_time - window`, without a hash index over all bars.
    idx = bars.index
    close = bars["close"].to_numpy()
    n = len(close)
    ref = np.full(n, np.nan)
    if n == 0:
        return ref
    t = idx.asi8
    per_minute = _PER_MINUTE[idx.unit]
    if (int(t[-1]) - int(t[0])) // per_minute == n - 1:  # no gaps: the rows are the minute grid
        if w < n:
            ref[w:] = close[:n - w]
        return ref
    minutes = t // per_minute
    pos = minutes - minutes[0]
    grid = np.full(int(pos[-1]) + 1, -1, dtype=np.int64)
    grid[pos] = np.arange(n)
    back = pos - w
    ok = back >= 0
    src = np.where(ok, grid[np.maximum(back, 0)], -1)
    hit = src >= 0
    ref[hit] = close[src[hit]]
    return ref


def _lookback(index: pd.DatetimeIndex, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of `rows` and k = 0 .. length - 1: the row of the bar that opened k minutes earlier.

    Returns (row, present), both (len(rows), length); row is only meaningful where present. Windows are
    thus fixed spans of DATA time ("15 minutes" is 15 minutes whatever gaps the data has), found by an
    exact search at the candidate bars only (a spike is rare: no full-length grid is built).
    """
    t = index.asi8
    want = t[rows][:, None] - np.arange(length)[None, :] * _PER_MINUTE[index.unit]
    found = np.minimum(np.searchsorted(t, want), len(t) - 1)
    return found, t[found] == want


def _window_stats(values: np.ndarray, present: np.ndarray, start: int,
                  length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum, bars present, present bars with NaN) over lookback columns start .. start + length - 1.

    `values[:, k]` is the value k minutes before each candidate (NaN where no bar), `present[:, k]` whether
    that bar exists. The sum is accumulated sequentially from 0.0 with k ascending (a cumsum, not numpy's
    pairwise sum): bit-identical whatever the series start.
    """
    g = values[:, start:start + length]
    p = present[:, start:start + length]
    terms = np.zeros((len(g), length + 1))
    np.copyto(terms[:, 1:], g, where=p & np.isfinite(g))
    total = np.cumsum(terms, axis=1)[:, -1]
    count = p.sum(axis=1, dtype=np.float64)
    nans = (p & np.isnan(g)).sum(axis=1, dtype=np.float64)
    return total, count, nans


def _window_extremes(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max high and min low across the lookback columns (NaN = missing minute, ignored; none -> -inf/inf)."""
    return np.fmax.reduce(high, axis=1, initial=-np.inf), np.fmin.reduce(low, axis=1, initial=np.inf)


def evaluate(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.DataFrame:
    """Per-bar drafts (DRAFT_COLUMNS, same index as `bars`); side -1 fades an up-spike, +1 a down-spike.

    A bar fires when |spike_moves| >= spike_threshold_pct, the volume ratio is >= min_volume_ratio
    (and known), and no signal fired within cooldown_seconds before it. entry = close of the signal bar
    (a reference; the fill is the next bar's open plus slippage, see apps.engine.exits).

    Levels for a SHORT after an up-spike from `ref` (close window_minutes ago) to the window's high
    `extreme` (mirror for a LONG):
      stop   = max(extreme * (1 + stop_buffer_pct %), entry * (1 + min_stop_pct %))
      target = max(entry * (1 - take_profit_pct %), level) with level = ref + retracement * (extreme - ref)
               when level <= entry * (1 - min_target_pct %), else entry * (1 - take_profit_pct %)
    so the stop is always above entry and the target always below it.

    confidence = min(1, 0.5 + 0.25 * clip(|move| / threshold - 1, 0, 1)
                          + 0.25 * clip(volume_ratio / min_volume_ratio - 1, 0, 1)):
    0.5 for a bare qualifying spike, full marks at twice the threshold and twice the volume ratio.
    size_mult = 0.7 + 0.3 * confidence (the prototype's size formula, 0.85..1.0).
    Bars with a spike that did not fire get side 0 and a reason saying why (volume, cooldown), so the
    UI can answer "why didn't it trade?".
    """
    bars = validate_bars(bars)
    out = idle_draft_arrays(len(bars))
    if len(bars) == 0:
        return drafts_frame(bars.index, **out)
    close = bars["close"].to_numpy()
    ref_all = _ref_close(bars, cfg)
    move = np.divide(close, ref_all)
    move -= 1.0  # == spike_moves(bars, cfg), kept as arrays
    thr = cfg.spike_threshold_pct / 100.0
    with np.errstate(invalid="ignore"):
        cand = np.flatnonzero(np.abs(move) >= thr)
    if len(cand) == 0:
        return drafts_frame(bars.index, **out)

    w, lb = cfg.window_minutes, cfg.volume_lookback_minutes
    row, present = _lookback(bars.index, cand, w + lb)

    def back(col: str) -> np.ndarray:
        """col k minutes before each candidate, NaN where no bar opened then."""
        return np.where(present, bars[col].to_numpy()[row], np.nan)

    vol = back("volume")
    w_sum, w_n, w_nan = _window_stats(vol, present, 0, w)          # (t - w, t]
    l_sum, l_n, l_nan = _window_stats(vol, present, w, lb)         # (t - w - lb, t - w]
    hi, lo = _window_extremes(back("high")[:, :w], back("low")[:, :w])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (w_sum / w_n) / (l_sum / l_n)
    vol_known = (w_nan == 0) & (l_nan == 0)
    enough = l_n >= lb / 2
    ratio_ok = vol_known & enough & np.isfinite(ratio) & (ratio >= cfg.min_volume_ratio)

    ref = ref_all[cand]
    ts = bars.index.asi8[cand] // (_PER_MINUTE[bars.index.unit] // 60)  # epoch seconds (whole minutes)
    reasons = out["reason"]
    side = out["side"]
    fired: list[int] = []
    last_fire_s: int | None = None
    for j, i in enumerate(cand):  # the cooldown depends on earlier firings: a cheap loop over candidates
        m = move[i]
        head = (f"{'up' if m > 0 else 'down'}-spike {m * 100:+.2f}% in {w} min "
                f"(threshold {cfg.spike_threshold_pct:g}%)")
        if not vol_known[j]:
            reasons[i] = f"{head} but volume data missing -> no trade"
        elif not enough[j]:
            reasons[i] = f"{head} but only {int(l_n[j])} of {lb} lookback minutes present -> no trade"
        elif not np.isfinite(ratio[j]):
            reasons[i] = f"{head} but no volume traded in the {lb}-minute lookback -> no trade"
        elif not ratio_ok[j]:
            reasons[i] = f"{head} but volume x{ratio[j]:.2f} < x{cfg.min_volume_ratio:g} -> no trade"
        elif last_fire_s is not None and ts[j] - last_fire_s < cfg.cooldown_seconds:
            reasons[i] = (f"{head}, volume x{ratio[j]:.2f}, but in cooldown ({ts[j] - last_fire_s} s since "
                          f"the last signal < {cfg.cooldown_seconds:g} s) -> no trade")
        else:
            last_fire_s = int(ts[j])
            fired.append(j)
            s = -1 if m > 0 else 1
            side[i] = s
            reasons[i] = f"{head}, volume x{ratio[j]:.2f} -> fade {'SHORT' if s < 0 else 'LONG'}"

    if fired:
        f = np.asarray(fired)
        rows = cand[f]
        s = side[rows].astype(np.float64)  # -1 short, +1 long
        entry = close[rows]
        extreme = np.where(s < 0, hi[f], lo[f])
        r = ref[f]
        stop = np.where(
            s < 0,
            np.maximum(extreme * (1 + cfg.stop_buffer_pct / 100), entry * (1 + cfg.min_stop_pct / 100)),
            np.minimum(extreme * (1 - cfg.stop_buffer_pct / 100), entry * (1 - cfg.min_stop_pct / 100)),
        )
        pct_target = entry * (1 + s * cfg.take_profit_pct / 100)  # below entry for a short
        level = r + cfg.retracement * (extreme - r)
        # level usable only when it is on the profitable side by at least min_target_pct
        usable = s * (level - entry) >= entry * cfg.min_target_pct / 100
        # the nearer of the two profitable targets: min distance from entry
        target = np.where(usable & (np.abs(level - entry) < np.abs(pct_target - entry)), level, pct_target)
        mag = np.abs(move[rows]) / thr - 1.0
        vbonus = ratio[f] / cfg.min_volume_ratio - 1.0
        conf = np.minimum(1.0, 0.5 + 0.25 * np.clip(mag, 0, 1) + 0.25 * np.clip(vbonus, 0, 1))
        out["confidence"][rows] = conf
        out["entry"][rows] = entry
        out["stop"][rows] = stop
        out["target"][rows] = target
        out["size_mult"][rows] = 0.7 + 0.3 * conf
        out["max_hold_s"][rows] = float(cfg.max_hold_seconds)
        out["priority"][rows] = cfg.priority
    return drafts_frame(bars.index, **out)


def state_summary(bars: pd.DataFrame, cfg: SpikeFaderConfig | None = None) -> dict[str, str]:
    """Display strings for the ghosts page: the move over the window now, and the last spike it faded."""
    cfg = cfg or SpikeFaderConfig()
    bars = validate_bars(bars)
    if len(bars) == 0:
        return {"move": "n/a", "last_spike": "none"}
    move = float(spike_moves(bars, cfg).iat[-1])
    move_text = "n/a (no bar a window ago)" if not math.isfinite(move) else (
        f"{move * 100:+.2f}% in {cfg.window_minutes} min (threshold {cfg.spike_threshold_pct:g}%)")
    drafts = evaluate(bars, cfg)
    fired = np.flatnonzero(drafts["side"].to_numpy() != 0)
    last = "none in this window" if len(fired) == 0 else (
        f"{'SHORT' if drafts['side'].iat[fired[-1]] < 0 else 'LONG'} at {drafts.index[fired[-1]]:%Y-%m-%d %H:%M} UTC")
    return {"move": move_text, "last_fade": last}
