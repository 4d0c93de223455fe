"""Streak fader: an example ghost plug-in (issue 11), loaded with HFT_GHOSTS_DIR=plugins.

It lives outside `apps/` and imports only the plug-in API (`apps.engine.plugins`), as a ghost of your own would.

The rule, with the defaults: after `streak` consecutive 1-minute bars that each closed below the one before
(no gap between them) and fell `move_pct` % or more in total over those bars, draft a LONG at the last close,
betting on a bounce; the mirror image (rising streak) drafts a SHORT unless `long_only`. Stop `stop_pct` %
below the entry (above, short), target `target_pct` % above it, time stop `max_hold_min` minutes.

Causal and exact: the row of bar i reads bars i - streak .. i only, by data time (a gap inside the streak
means no streak), comparisons and one division per bar, no running sums, so the output from a live window of
`warmup_minutes` equals the whole-history output to the bit (`manage.py check_ghost streak_fader` proves it).
"""

import dataclasses
from typing import ClassVar

import numpy as np
import pandas as pd

from apps.engine.plugins import ConfigError, GhostConfig, check_range, drafts_frame, idle_draft_arrays, validate_bars

KIND = "streak_fader"
TITLE = "Streak fader (example plug-in)"


@dataclasses.dataclass(frozen=True)
class Config(GhostConfig):
    """Fields (unit; default): streak (bars; 5), move_pct (% over the streak; 0.5), stop_pct (% of the entry;
    0.4), target_pct (% of the entry; 0.6), max_hold_min (minutes; 30), long_only (bool; false)."""

    KIND: ClassVar[str] = KIND

    streak: int = 5
    move_pct: float = 0.5
    stop_pct: float = 0.4
    target_pct: float = 0.6
    max_hold_min: int = 30
    long_only: bool = False

    def __post_init__(self) -> None:
        for name in ("streak", "max_hold_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{KIND}.{name} must be an integer, got {v!r}")
        check_range(KIND, "streak", self.streak, 2, 60, unit="bars")
        check_range(KIND, "move_pct", self.move_pct, 0, 20, lo_open=True, unit="percent")
        check_range(KIND, "stop_pct", self.stop_pct, 0, 20, lo_open=True, unit="percent of the entry")
        check_range(KIND, "target_pct", self.target_pct, 0, 20, lo_open=True, unit="percent of the entry")
        check_range(KIND, "max_hold_min", self.max_hold_min, 1, 1440, unit="minutes")
        if not isinstance(self.long_only, bool):
            raise ConfigError(f"{KIND}.long_only must be true or false, got {self.long_only!r}")

    @property
    def warmup_minutes(self) -> int:
        """The streak's bars and the close before its first one."""
        return self.streak + 1


def _streaks(bars: pd.DataFrame, cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(down streak ends, up streak ends, move over the streak as a fraction; NaN where no streak fits)."""
    close = bars["close"].to_numpy()
    n, k = len(close), cfg.streak
    down = np.zeros(n, dtype=bool)
    up = np.zeros(n, dtype=bool)
    move = np.full(n, np.nan)
    if n <= k:
        return down, up, move
    minutes = bars.index.as_unit("ns").asi8 // 60_000_000_000
    step_ok = np.diff(minutes) == 1  # bar j follows bar j-1 by exactly one minute
    fell = (close[1:] < close[:-1]) & step_ok
    rose = (close[1:] > close[:-1]) & step_ok
    # bar i ends a streak when the k steps into bars i-k+1 .. i all fell (rose): windows over the step arrays
    win_fell = np.lib.stride_tricks.sliding_window_view(fell, k).all(axis=1)
    win_rose = np.lib.stride_tricks.sliding_window_view(rose, k).all(axis=1)
    down[k:] = win_fell
    up[k:] = win_rose
    with np.errstate(invalid="ignore", divide="ignore"):
        move[k:] = close[k:] / close[:-k] - 1.0
    return down, up, move


def evaluate(bars: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Per-bar drafts: LONG at the end of a falling streak of at least move_pct %, SHORT at a rising one."""
    bars = validate_bars(bars)
    out = idle_draft_arrays(len(bars))
    if len(bars) == 0:
        return drafts_frame(bars.index, **out)
    down, up, move = _streaks(bars, cfg)
    thr = cfg.move_pct / 100
    with np.errstate(invalid="ignore"):
        longs = down & (move <= -thr)
        shorts = up & (move >= thr) & (not cfg.long_only)
    side = out["side"]
    side[longs] = 1
    side[shorts] = -1
    rows = np.flatnonzero(side != 0)
    if len(rows):
        close = bars["close"].to_numpy()
        s = side[rows].astype(np.float64)
        entry = close[rows]
        out["entry"][rows] = entry
        out["stop"][rows] = entry * (1 - s * cfg.stop_pct / 100)
        out["target"][rows] = entry * (1 + s * cfg.target_pct / 100)
        out["confidence"][rows] = np.clip(0.5 + 0.25 * (np.abs(move[rows]) / thr - 1.0), 0.5, 1.0)
        out["size_mult"][rows] = 1.0
        out["max_hold_s"][rows] = float(cfg.max_hold_min * 60)
        out["priority"][rows] = 1
        for i in rows:
            word = "fell" if side[i] > 0 else "rose"
            out["reason"][i] = (f"{cfg.streak} bars in a row {word} {move[i] * 100:+.3f}% "
                                f"(threshold {cfg.move_pct:g}%) -> fade {'LONG' if side[i] > 0 else 'SHORT'}")
    return drafts_frame(bars.index, **out)


def state_summary(bars: pd.DataFrame, cfg: Config) -> dict[str, str]:
    """The Ghosts page's line: the move over the last `streak` bars."""
    bars = validate_bars(bars)
    if len(bars) <= cfg.streak:
        return {"move": "n/a (too few bars)"}
    _, _, move = _streaks(bars, cfg)
    m = move[-1]
    return {"move": f"{m * 100:+.2f}% over {cfg.streak} bars (threshold {cfg.move_pct:g}%)"
            if np.isfinite(m) else "n/a (a gap in the last bars)"}
