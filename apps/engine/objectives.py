"""What a parameter study maximises, scored on one window of one trial's run (issue 10), pure.

A trial runs once over the whole study range (apps.engine.trial); each fold's train and test windows are
scored from that run's equity AS OF each UTC midnight (`TrialRun.daily_equity`) and its closed trades:

- the window's equity levels: the level as of the window's start (the baseline, the last point at or before
  it), then each point up to and including its end; daily return r_d = level_d / level_(d-1) - 1;
- a trade counts in the window its EXIT falls in (exit bar open time in [start, end));
- net P&L    = equity at the window's end - equity at its start (realised P&L and the change of the open
               positions' marks, net of fees: the lab's daily P&L summed over the window);
- Sharpe, Sortino: `performance.sharpe_ratio` / `sortino_ratio` of the window's daily returns, x sqrt(365)
               (the lab's formulas and texts, apps.engine.report.FORMULAS);
- profit factor: `performance.trade_stats` over the window's trades' net P&L;
- max drawdown: `performance.max_drawdown` of the window's daily levels (the baseline included): a daily
               view, as the stitched out-of-sample curve allows; a lab run shows the per-bar figure;
- Calmar     = annualised return / max drawdown, annualised return = window return x 365 / days. Arithmetic
               annualisation on purpose: compounding a 10-day return to a year explodes (+5 % in 10 days
               is x5.9 a year compounded) and would rank short windows by noise.

Every objective is maximised. A window's value is None, with the reason, when its objective is undefined or
infinite (fewer than 2 daily returns, a flat curve, no losing day or trade, no drawdown) or when it holds
fewer than `min_trades` trades: a trial cannot win on a stretch where it barely traded.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from apps.engine.performance import max_drawdown, sharpe_ratio, sortino_ratio, trade_stats
from apps.engine.report import DAYS_PER_YEAR, FORMULAS, num
from apps.engine.types import ConfigError

OBJECTIVES = ("sharpe", "sortino", "profit_factor", "net_pnl", "calmar")
OBJECTIVE_FORMULAS = {
    "sharpe": FORMULAS["sharpe"] + "; over the window's days",
    "sortino": FORMULAS["sortino"] + "; over the window's days",
    "profit_factor": FORMULAS["profit_factor"] + "; trades closed in the window",
    "net_pnl": "net P&L = equity at the window's end − equity at its start (realised P&L and the change of open "
               "positions' marks, after fees)",
    "calmar": "Calmar = annualised return ÷ max drawdown; annualised return = window return × 365 ÷ days "
              "(arithmetic); max drawdown of the equity at each UTC midnight in the window",
}


class ClosedTradeLike(Protocol):
    exit_time: pd.Timestamp
    net_pnl: Any  # float or Decimal


@dataclasses.dataclass(frozen=True)
class WindowScore:
    """One window's figures. Money in quote currency, percentages in percent; None = undefined."""

    objective: str
    value: float | None
    trades: int
    net_pnl: float | None
    sharpe: float | None
    sortino: float | None
    profit_factor: float | None
    max_drawdown_pct: float | None
    calmar: float | None
    reason: str  # why value is None ("" when it is not)
    days: int = 0  # daily returns in the window
    return_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (floats or None, never NaN/inf)."""
        return {k: (num(v) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WindowScore":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _ns(t: Any) -> int:
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.as_unit("ns").value)


_MINUTE_NS = 60_000_000_000
_DAY_NS = 86_400_000_000_000


def daily_equity(equity: pd.Series, start_capital: float) -> pd.Series:
    """A run's equity AS OF each UTC midnight, from its per-bar equity (`BacktestResult.equity`: equity at
    each bar's close, indexed by bar open time).

    Points: the trading start (the first bar's open, at `start_capital`), every UTC midnight after it up to
    the last bar's close (the level as of midnight M is the equity at the close of the last bar that opened
    before M, carried through bar-less days), and the last bar's close when that is not a midnight. The daily
    returns between consecutive points are the lab's daily returns (`performance.sample_returns(equity,
    "1D")`), the first measured from the start capital.
    """
    if len(equity) == 0:
        return pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=np.float64, name="equity")
    t = pd.DatetimeIndex(equity.index).as_unit("ns").asi8
    v = equity.to_numpy(np.float64)
    first, last_close = int(t[0]), int(t[-1]) + _MINUTE_NS
    midnights = np.arange((first // _DAY_NS + 1) * _DAY_NS, last_close + 1, _DAY_NS, dtype=np.int64)
    at = np.searchsorted(t, midnights, side="left") - 1  # the last bar that opened before each midnight
    times = [first, *midnights.tolist()]
    levels = [float(start_capital), *v[at].tolist()]
    if last_close % _DAY_NS:
        times.append(last_close)
        levels.append(float(v[-1]))
    index = pd.DatetimeIndex(np.asarray(times, dtype=np.int64).view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(levels, index=index, dtype=np.float64, name="equity")


def window_levels(daily_equity: pd.Series, start: Any, end: Any) -> np.ndarray:
    """The window's equity levels: the baseline as of `start` (the last point at or before it; the first point
    when none is), then every point in (start, end]."""
    if len(daily_equity) == 0:
        return np.empty(0, dtype=np.float64)
    t = pd.DatetimeIndex(daily_equity.index).as_unit("ns").asi8
    v = daily_equity.to_numpy(np.float64)
    i0 = max(int(np.searchsorted(t, _ns(start), side="right")) - 1, 0)
    i1 = int(np.searchsorted(t, _ns(end), side="right"))
    return v[i0:max(i1, i0)]


def window_pnls(trades: Sequence[ClosedTradeLike], start: Any, end: Any) -> list[float]:
    """Net P&L of the trades whose exit falls in [start, end)."""
    s, e = _ns(start), _ns(end)
    return [float(t.net_pnl) for t in trades if s <= _ns(t.exit_time) < e]


def _undefined(name: str, value: float, days: int, n_trades: int) -> str:
    """Why `value` of objective `name` cannot rank trials ("" when it can)."""
    if math.isfinite(value):
        return ""
    if name in ("sharpe", "sortino") and days < 2:
        return f"{name} undefined: fewer than 2 daily returns ({days})"
    if name == "calmar" and days == 0:
        return "calmar undefined: no daily return in the window"
    return {
        "sharpe": "sharpe undefined: the daily returns did not vary",
        "sortino": "sortino infinite: no losing day" if value > 0 else "sortino undefined: no losing day, no gain",
        "profit_factor": ("profit factor undefined: no trades" if n_trades == 0 else
                          "profit factor infinite: no losing trade" if value > 0 else
                          "profit factor undefined: no profit and no loss"),
        "calmar": "calmar infinite: no drawdown in the window" if value > 0 else "calmar undefined: a flat window",
        "net_pnl": "net P&L undefined: no equity in the window",
    }[name]


def _calmar(ret: float, days: int, dd: float) -> float:
    """Annualised return (ret x 365 / days) / max drawdown; +inf for a gain without drawdown, NaN if flat."""
    if days == 0 or not math.isfinite(ret) or not math.isfinite(dd):
        return math.nan
    if dd > 0:
        return ret * DAYS_PER_YEAR / days / dd
    return math.inf if ret > 0 else math.nan


def window_score(daily_equity: pd.Series, trades: Sequence[ClosedTradeLike], start: Any, end: Any, *,
                 objective: str, min_trades: int) -> WindowScore:
    """The figures of the window [start, end) and the objective's value (module docstring)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    levels = window_levels(daily_equity, start, end)
    rets = levels[1:] / levels[:-1] - 1.0 if len(levels) >= 2 else np.empty(0)
    days = len(rets)
    pnls = window_pnls(trades, start, end)
    n, _, _, _, _, pf = trade_stats(pnls)
    net = float(levels[-1] - levels[0]) if len(levels) else math.nan
    ret = net / float(levels[0]) if len(levels) and levels[0] > 0 else math.nan
    sharpe = sharpe_ratio(rets, DAYS_PER_YEAR)
    sortino = sortino_ratio(rets, DAYS_PER_YEAR)
    dd = max_drawdown(levels) if len(levels) else math.nan
    calmar = _calmar(ret, days, dd)
    figures = {"sharpe": sharpe, "sortino": sortino, "profit_factor": pf, "net_pnl": net, "calmar": calmar}
    raw = figures[objective]
    reason = _undefined(objective, raw, days, n)
    if not reason and n < min_trades:
        reason = f"{n} trade{'s' if n != 1 else ''} in the window < min_trades {min_trades}"
    return WindowScore(
        objective=objective, value=None if reason else float(raw), trades=n, net_pnl=num(net), sharpe=num(sharpe),
        sortino=num(sortino), profit_factor=num(pf), max_drawdown_pct=num(dd * 100), calmar=num(calmar),
        reason=reason, days=days, return_pct=num(ret * 100),
    )
