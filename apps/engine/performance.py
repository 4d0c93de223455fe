"""Performance figures of a ghost (or the portfolio), the score the signal manager uses, and the
auto-disable rules: pure functions over closed-trade P&L and an equity curve.

The prototype's Sharpe was never computed, its profit factor came out negative, and its revenue
"target" was a fraction divided into dollars (prototype-notes §0.6, §5). The textbook definitions, as
used everywhere below:

- win rate       = winning trades / closed trades, a win being net P&L (after fees) > 0;
- profit factor  = gross profit / gross loss = sum of winning net P&L / |sum of losing net P&L|;
                   +inf with wins and no losses, NaN with no trades (undefined, not 0);
- Sharpe         = mean(r) / std(r, ddof=1) x sqrt(periods per year), r = simple returns of the equity
                   curve SAMPLED AT FIXED TIMES (`sample_returns`: last equity of each period, carried
                   forward through periods without trades), risk-free rate 0, crypto years of 365 days;
- Sortino        = mean(r) / downside deviation x sqrt(periods per year), downside deviation =
                   sqrt(mean(min(r, 0)^2)) over ALL periods (target return 0);
- max drawdown   = max over t of (peak_t - equity_t) / peak_t, a fraction of the running peak;
- target progress = P&L in the target's period / target amount, both in quote currency.

Returns per trade are NOT used for Sharpe: trades have uneven lengths and gaps, so their mean/std has
no time unit and cannot be annualised honestly.
"""

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from apps.engine.types import ConfigError, GhostConfig, check_range

PERIODS_PER_YEAR = {"1h": 365 * 24, "1D": 365, "1W": 52}


@dataclasses.dataclass(frozen=True)
class Performance:
    """Figures over one sample; NaN where a figure is undefined (no trades, a flat curve)."""

    trades: int
    wins: int
    win_rate: float
    gross_profit: float
    gross_loss: float
    profit_factor: float
    net_pnl: float
    sharpe: float
    sortino: float
    max_drawdown: float
    target_progress: float
    periods: int  # number of sampled returns behind sharpe/sortino


def trade_stats(pnls: Sequence[float]) -> tuple[int, int, float, float, float, float]:
    """(trades, wins, win_rate, gross_profit, gross_loss, profit_factor) from net P&L per closed trade."""
    p = np.asarray(pnls, dtype=np.float64)
    p = p[np.isfinite(p)]
    n = len(p)
    if n == 0:
        return 0, 0, math.nan, 0.0, 0.0, math.nan
    wins = int((p > 0).sum())
    gp = float(p[p > 0].sum())
    gl = float(-p[p < 0].sum())
    if gl > 0:
        pf = gp / gl
    else:
        pf = math.inf if gp > 0 else math.nan
    return n, wins, wins / n, gp, gl, pf


def sample_returns(equity: pd.Series, freq: str = "1D") -> pd.Series:
    """Simple returns of `equity` (indexed by UTC time) over consecutive calendar periods of `freq`.

    Each period's level is the last equity inside it, carried forward through periods without a point
    (a flat account returns 0 there); the first period's return is measured from the curve's first point.
    """
    if len(equity) == 0:
        return pd.Series(dtype=np.float64)
    e = equity.sort_index().astype(np.float64)
    levels = e.resample(freq).last().ffill()
    prev = levels.shift(1)
    prev.iloc[0] = e.iloc[0]
    return levels / prev - 1.0


_DAY_NS = 86_400_000_000_000


def sample_returns_daily(t_ns: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """`sample_returns(pd.Series(equity, index=t_ns as UTC times), "1D").to_numpy()` without pandas, for a
    curve whose times (int64 ns since the epoch) are already in order: the same floats, bit for bit
    (tests/engine/test_backtest_lab.py compares them), at a fraction of the cost of a resample. The backtest
    recomputes a ghost's figures after each of its closes, thousands of times in a long lab run.
    """
    if len(equity) == 0:
        return np.empty(0, dtype=np.float64)
    e = np.asarray(equity, dtype=np.float64)
    day = np.asarray(t_ns, dtype=np.int64) // _DAY_NS
    last = np.flatnonzero(np.diff(day, append=day[-1] + 1))  # the last point of each day present
    slot = np.full(int(day[-1] - day[0]) + 1, -1, dtype=np.int64)
    slot[day[last] - day[0]] = last
    levels = e[np.maximum.accumulate(slot)]  # days without a point carry the previous level forward
    prev = np.empty_like(levels)
    prev[0] = e[0]
    prev[1:] = levels[:-1]
    return levels / prev - 1.0


def sharpe_ratio(returns: Sequence[float], periods_per_year: float) -> float:
    """Annualised Sharpe of periodic simple returns; NaN with < 2 returns or zero variance."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 2:
        return math.nan
    sd = r.std(ddof=1)
    if sd == 0:
        return math.nan
    return float(r.mean() / sd * math.sqrt(periods_per_year))


def sortino_ratio(returns: Sequence[float], periods_per_year: float) -> float:
    """Annualised Sortino (target 0); +inf when nothing ever lost, NaN with < 2 returns."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 2:
        return math.nan
    dd = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if dd == 0:
        return math.inf if r.mean() > 0 else math.nan
    return float(r.mean() / dd * math.sqrt(periods_per_year))


def max_drawdown(equity: Sequence[float]) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0.1 = 10 %); 0.0 for < 2 points."""
    e = np.asarray(equity, dtype=np.float64)
    e = e[np.isfinite(e)]
    if len(e) < 2:
        return 0.0
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (peak - e) / peak, 0.0)
    return float(dd.max())


def performance(
    pnls: Sequence[float],
    equity: pd.Series,
    *,
    freq: str = "1D",
    period_pnl: float = 0.0,
    target_amount: float | None = None,
) -> Performance:
    """All figures for one ghost: closed-trade net P&L, its equity curve (capital + cumulative P&L,
    realised and marked), and the P&L of the current target period against the target."""
    ppy = PERIODS_PER_YEAR.get(freq)
    if ppy is None:
        raise ConfigError(f"freq must be one of {', '.join(PERIODS_PER_YEAR)}, got {freq!r}")
    return performance_of(pnls, equity.to_numpy(), sample_returns(equity, freq), ppy,
                          period_pnl=period_pnl, target_amount=target_amount)


def performance_of(pnls: Sequence[float], equity: np.ndarray, returns: Sequence[float], periods_per_year: float,
                   *, period_pnl: float = 0.0, target_amount: float | None = None) -> Performance:
    """The figures from their inputs: closed-trade net P&L, the equity curve's values (in time order) and its
    returns sampled at fixed periods (`sample_returns` or `sample_returns_daily`)."""
    n, wins, wr, gp, gl, pf = trade_stats(pnls)
    progress = period_pnl / target_amount if target_amount and target_amount > 0 else math.nan
    return Performance(
        trades=n, wins=wins, win_rate=wr, gross_profit=gp, gross_loss=gl, profit_factor=pf,
        net_pnl=float(np.nansum(np.asarray(pnls, dtype=np.float64))) if n else 0.0,
        sharpe=sharpe_ratio(returns, periods_per_year), sortino=sortino_ratio(returns, periods_per_year),
        max_drawdown=max_drawdown(equity) if len(equity) else 0.0,
        target_progress=progress, periods=len(returns),
    )


@dataclasses.dataclass(frozen=True)
class ScoreWeights(GhostConfig):
    """How the performance score (0..1) is built; each part is first mapped to 0..1:

    - win_rate (weight 0.25): the win rate itself;
    - profit_factor (0.25): min(PF / pf_full, 1), pf_full = 2.0 (PF 2 or better scores full marks);
    - sharpe (0.20): clip(Sharpe / sharpe_full, 0, 1), sharpe_full = 3.0 (the prototype's divisor);
    - drawdown (0.15): 1 - min(max drawdown / dd_zero, 1), dd_zero = 0.20 (a 20 % drawdown scores 0);
    - target (0.15): clip(target progress, 0, 1) (the prototype's term, with the units fixed).
    Undefined figures (NaN: too few trades or periods) count as the neutral 0.5 of their part, and a ghost
    with fewer than `min_trades` closed trades gets the neutral score 0.5: a new ghost is neither
    favoured nor punished by the manager until it has a record.
    """

    KIND = "score"

    w_win_rate: float = 0.25
    w_profit_factor: float = 0.25
    w_sharpe: float = 0.20
    w_drawdown: float = 0.15
    w_target: float = 0.15
    pf_full: float = 2.0
    sharpe_full: float = 3.0
    dd_zero: float = 0.20
    min_trades: int = 5

    def __post_init__(self) -> None:
        ws = [self.w_win_rate, self.w_profit_factor, self.w_sharpe, self.w_drawdown, self.w_target]
        for name, w in zip(("w_win_rate", "w_profit_factor", "w_sharpe", "w_drawdown", "w_target"), ws, strict=True):
            check_range(self.KIND, name, w, 0, 1)
        if not math.isclose(sum(ws), 1.0, abs_tol=1e-9):
            raise ConfigError(f"score weights must add up to 1, they add up to {sum(ws):g}")
        check_range(self.KIND, "pf_full", self.pf_full, 0, 100, lo_open=True)
        check_range(self.KIND, "sharpe_full", self.sharpe_full, 0, 100, lo_open=True)
        check_range(self.KIND, "dd_zero", self.dd_zero, 0, 1, lo_open=True, unit="fraction")
        check_range(self.KIND, "min_trades", self.min_trades, 0, 10_000)


def _part(x: float, f) -> float:
    """f(x), or the neutral 0.5 when the figure is undefined (NaN)."""
    return 0.5 if math.isnan(x) else float(f(x))


def performance_score(perf: Performance, w: ScoreWeights = ScoreWeights()) -> float:
    """The 0..1 score of `ScoreWeights`' docstring."""
    if perf.trades < w.min_trades:
        return 0.5
    parts = (
        (w.w_win_rate, _part(perf.win_rate, lambda x: x)),
        (w.w_profit_factor, _part(perf.profit_factor, lambda x: min(x / w.pf_full, 1.0))),
        (w.w_sharpe, _part(perf.sharpe, lambda x: min(max(x / w.sharpe_full, 0.0), 1.0))),
        (w.w_drawdown, 1.0 - min(perf.max_drawdown / w.dd_zero, 1.0)),
        (w.w_target, _part(perf.target_progress, lambda x: min(max(x, 0.0), 1.0))),
    )
    return float(min(max(sum(wt * v for wt, v in parts), 0.0), 1.0))


@dataclasses.dataclass(frozen=True)
class AutoDisableRules(GhostConfig):
    """When a ghost is switched off for losing money (checked after each of its closed trades).

    - min_trades (trades; 10; prototype's "after >= 10 trades"): nothing is judged before this many.
    - win_rate_floor (fraction; 0.30; prototype's 30 %): below it -> disabled.
    - profit_factor_floor (ratio; 0.8; new): gross profit / gross loss below it -> disabled.
    - max_drawdown (fraction of the ghost's peak equity; 0.10; new): a deeper drawdown -> disabled.
    - loss_target_multiple (x the target amount; 2.0; new): a loss in the target's period larger than
      this multiple of the target -> disabled (0 turns the rule off; needs a target).
    """

    KIND = "auto_disable"

    min_trades: int = 10
    win_rate_floor: float = 0.30
    profit_factor_floor: float = 0.8
    max_drawdown: float = 0.10
    loss_target_multiple: float = 2.0

    def __post_init__(self) -> None:
        check_range(self.KIND, "min_trades", self.min_trades, 1, 10_000, unit="trades")
        check_range(self.KIND, "win_rate_floor", self.win_rate_floor, 0, 1, unit="fraction")
        check_range(self.KIND, "profit_factor_floor", self.profit_factor_floor, 0, 100, unit="ratio")
        check_range(self.KIND, "max_drawdown", self.max_drawdown, 0, 1, lo_open=True, unit="fraction")
        check_range(self.KIND, "loss_target_multiple", self.loss_target_multiple, 0, 1000, unit="x target")


def rules_breached(perf: Performance, rules: AutoDisableRules, *, period_pnl: float = 0.0,
                   target_amount: float | None = None) -> list[str]:
    """Each breached rule as operator text with the numbers; [] when the ghost may keep trading."""
    out: list[str] = []
    if perf.trades >= rules.min_trades:
        if perf.win_rate < rules.win_rate_floor:
            out.append(f"win rate {perf.win_rate:.1%} over {perf.trades} trades < floor {rules.win_rate_floor:.0%}")
        if math.isfinite(perf.profit_factor) and perf.profit_factor < rules.profit_factor_floor:
            out.append(f"profit factor {perf.profit_factor:.2f} (gross profit {perf.gross_profit:.2f} / gross loss "
                       f"{perf.gross_loss:.2f}) < floor {rules.profit_factor_floor:g}")
    if perf.max_drawdown > rules.max_drawdown:
        out.append(f"max drawdown {perf.max_drawdown:.2%} > ceiling {rules.max_drawdown:.0%}")
    if rules.loss_target_multiple > 0 and target_amount and target_amount > 0:
        limit = rules.loss_target_multiple * target_amount
        if -period_pnl > limit:
            out.append(f"loss {period_pnl:.2f} this period exceeds {rules.loss_target_multiple:g} x target "
                       f"{target_amount:.2f} = {limit:.2f}")
    return out
