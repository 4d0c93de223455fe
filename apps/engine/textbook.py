"""The textbook fader (issue 9, "The textbook rules"): a strategy simple enough to be re-implemented in
Freqtrade, backtesting.py or a plain loop, so users can check the engine against them trade by trade.

The rules, with the defaults (TextbookFaderConfig):

- move[i] = close[i] / close[i - 15] - 1, known at the close of bar i (15 minutes of data time back);
- flat and move <= -1.2 %: LONG; flat and move >= +1.2 %: SHORT (`long_only` switches shorts off); the
  entry fills at the open of bar i + 1;
- one position at a time: a signal while a position is open is ignored;
- from the entry bar on, each bar j: first a time stop when j = entry bar + 60 (exit at the open of j);
  then the stop 0.6 % from the fill (reached by the low for a long, the high for a short); then the
  target 0.8 % from the fill. A bar that touches both exits at the stop. A bar that opens beyond a level
  exits at that open, otherwise at the level;
- fixed stake 1,000 USDT (quantity = stake / fill price), fee 0.1 % of notional each side, no slippage;
  a trade still open at the end closes at the last close.

How the engine runs them: this module only DRAFTS (side, entry = the signal bar's close, stop and target
at stop_pct / target_pct from it, max_hold_s = max_hold_min x 60); everything else is the engine's, with
`apps.engine.presets.textbook_setup()`'s configuration: the fill at the next open (`FillModel` without slippage), levels
re-anchored on the fill at the same percentages (`exits.rebase_levels`), exits by `exits.bar_check` (the
time stop at the open first, gaps at the open, stop before target), stake sizing, one open position
(`RiskLimits.max_open_positions=1`: a draft while a position is open gets the fate blocked_risk), no trend
gate, no auto-disable, no kill switch.

The exact comparison: move is computed as `close / close_ref - 1.0` in float64 and compared with
`-move_pct / 100` (`<=`) and `+move_pct / 100` (`>=`); an implementation that tests `close / close_ref <=
0.988` instead can differ on a bar whose move sits within one rounding step of the threshold.

Data gaps (decided here; the 90-day BTC/USDT file has none: 130,708 bars, every step exactly 1 minute):
everything is DATA time, like every ghost of the desk. The reference close is the bar that opened exactly
lookback_min minutes earlier; when that bar is missing there is no move and no signal (never a move over a
longer span). The time stop is due on the first bar whose open is at least max_hold_min minutes after the
entry bar's open (after a gap: the first bar after it, at its open). An entry still fills at the next
bar's open, whenever that bar comes. On gapless data these are exactly the bar-count rules above
(close[i - 15], j = entry + 60); an implementation counting bars (backtesting.py's `shift(15)`) differs only
across gaps.
"""

import dataclasses
import math
from typing import ClassVar

import numpy as np
import pandas as pd

from apps.engine.bars import validate_bars
from apps.engine.spike_fader import close_minutes_ago
from apps.engine.types import ConfigError, GhostConfig, check_range, drafts_frame, idle_draft_arrays

KIND = "textbook_fader"
TEXTBOOK_STAKE = 1000.0  # quote currency per trade
TEXTBOOK_FEE = 0.001  # 0.1 % of notional, each side


@dataclasses.dataclass(frozen=True)
class TextbookFaderConfig(GhostConfig):
    """Parameters of the textbook fader; percentages are percent (1.2 means 1.2 %).

    Fields (unit; default; source: issue 9's textbook rules):
    - lookback_min (minutes of data time; 15): move = close / close lookback_min minutes earlier - 1.
    - move_pct (% ; 1.2): a move <= -move_pct drafts a LONG, >= +move_pct a SHORT.
    - stop_pct (% of the fill; 0.6): the stop's distance from the entry fill.
    - target_pct (% of the fill; 0.8): the target's distance from the entry fill.
    - max_hold_min (minutes of data time; 60): the time stop, at the open of the bar it falls due on.
    - long_only (bool; false): no SHORT drafts.
    """

    KIND: ClassVar[str] = KIND

    lookback_min: int = 15
    move_pct: float = 1.2
    stop_pct: float = 0.6
    target_pct: float = 0.8
    max_hold_min: int = 60
    long_only: bool = False

    def __post_init__(self) -> None:
        k = self.KIND
        for name in ("lookback_min", "max_hold_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{k}.{name} must be an integer, got {v!r}")
        check_range(k, "lookback_min", self.lookback_min, 1, 1440, unit="minutes")
        check_range(k, "move_pct", self.move_pct, 0, 50, lo_open=True, hi_open=True, unit="percent")
        check_range(k, "stop_pct", self.stop_pct, 0, 50, lo_open=True, hi_open=True, unit="percent of the fill")
        check_range(k, "target_pct", self.target_pct, 0, 50, lo_open=True, hi_open=True,
                    unit="percent of the fill")
        check_range(k, "max_hold_min", self.max_hold_min, 1, 10_080, unit="minutes")
        if not isinstance(self.long_only, bool):
            raise ConfigError(f"{k}.long_only must be true or false, got {self.long_only!r}")

    @property
    def warmup_minutes(self) -> int:
        """History a live window needs: the bar lookback_min minutes back, and the current one."""
        return self.lookback_min + 1


def moves(bars: pd.DataFrame, cfg: TextbookFaderConfig) -> np.ndarray:
    """move[i] = close[i] / close(open_time[i] - lookback_min) - 1 (a fraction; NaN when that bar is missing)."""
    close = bars["close"].to_numpy()
    with np.errstate(invalid="ignore"):
        return close / close_minutes_ago(bars, cfg.lookback_min) - 1.0


def evaluate(bars: pd.DataFrame, cfg: TextbookFaderConfig) -> pd.DataFrame:
    """Per-bar drafts: side +1 where move <= -move_pct %, -1 where move >= +move_pct % (unless long_only),
    on EVERY such bar (the engine's one-position limit ignores those while a position is open).

    entry = the bar's close (the reference; the fill is the next open), stop = entry x (1 - side x
    stop_pct %), target = entry x (1 + side x target_pct %); the engine re-anchors both on the fill at the
    same percentages. confidence = 0.5 + 0.5 x clip(|move| / threshold - 1, 0, 1) (full at twice the
    threshold; it only matters next to other ghosts), priority 1, size_mult 1, max_hold_s = max_hold_min x 60.
    Causal: bar i uses bar i and the bar lookback_min minutes before it only.
    """
    bars = validate_bars(bars)
    n = len(bars)
    out = idle_draft_arrays(n)
    if n == 0:
        return drafts_frame(bars.index, **out)
    close = bars["close"].to_numpy()
    move = moves(bars, cfg)
    thr = cfg.move_pct / 100.0
    with np.errstate(invalid="ignore"):
        down = move <= -thr
        up = move >= thr
    side = out["side"]
    side[down] = 1
    if not cfg.long_only:
        side[up] = -1
    rows = np.flatnonzero(side != 0)
    reasons = out["reason"]
    for i in rows:
        m = move[i]
        reasons[i] = (f"move {m * 100:+.3f}% over {cfg.lookback_min} min "
                      f"({'<= -' if m < 0 else '>= +'}{cfg.move_pct:g}%) -> textbook {'LONG' if m < 0 else 'SHORT'}")
    if cfg.long_only:
        for i in np.flatnonzero(up):
            reasons[i] = (f"move {move[i] * 100:+.3f}% over {cfg.lookback_min} min (>= +{cfg.move_pct:g}%) "
                          "but long only -> no trade")
    if len(rows):
        s = side[rows].astype(np.float64)
        entry = close[rows]
        out["entry"][rows] = entry
        out["stop"][rows] = entry * (1 - s * cfg.stop_pct / 100)
        out["target"][rows] = entry * (1 + s * cfg.target_pct / 100)
        out["confidence"][rows] = 0.5 + 0.5 * np.clip(np.abs(move[rows]) / thr - 1.0, 0.0, 1.0)
        out["size_mult"][rows] = 1.0
        out["max_hold_s"][rows] = float(cfg.max_hold_min * 60)
        out["priority"][rows] = 1
    return drafts_frame(bars.index, **out)


def state_summary(bars: pd.DataFrame, cfg: TextbookFaderConfig | None = None) -> dict[str, str]:
    """Display strings: the move over the lookback now and the last bar that drafted."""
    cfg = cfg or TextbookFaderConfig()
    bars = validate_bars(bars)
    if len(bars) == 0:
        return {"move": "n/a", "last_signal": "none"}
    m = float(moves(bars, cfg)[-1])
    move_text = ("n/a (no bar a lookback ago)" if not math.isfinite(m)
                 else f"{m * 100:+.2f}% over {cfg.lookback_min} min (threshold {cfg.move_pct:g}%)")
    side = evaluate(bars, cfg)["side"].to_numpy()
    fired = np.flatnonzero(side != 0)
    last = "none in this window" if len(fired) == 0 else (
        f"{'LONG' if side[fired[-1]] > 0 else 'SHORT'} at {bars.index[fired[-1]]:%Y-%m-%d %H:%M} UTC")
    return {"move": move_text, "last_signal": last}
