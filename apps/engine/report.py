"""What a lab run shows, from a BacktestResult, pure (issue 9, "Read a run").

Every figure is JSON-friendly (floats or None, never NaN/inf) and carries its formula text, as the desk's
ghosts page does (apps/dashboard/views_risk.performance_figures). The formulas themselves live in
`apps.engine.performance` and are called from here, never written twice:

- net P&L      = final equity - start capital (the ledger: realised gross P&L - every fee; a position still
                 open at the end is closed at the last close, reason end_of_data);
- return       = net P&L / start capital;
- win rate, profit factor: `performance.trade_stats` over the trades' net P&L (after both fees);
- Sharpe, Sortino: `performance.sharpe_ratio` / `sortino_ratio` of the DAILY simple returns of the equity
  curve (`performance.sample_returns(equity, "1D")`: the last equity of each UTC day, carried through days
  without a bar), annualised with sqrt(365): crypto trades every day of the year, so a year is 365 daily
  returns, not 252. Returns per trade are never used (no time unit, see performance's docstring);
- max drawdown = `performance.max_drawdown` of the per-bar equity (marked at each close), with the dates:
  peak = the last bar at the running peak before the deepest point (where the fall began), trough = that
  deepest point, recovery = the first later bar back at or above the peak (None: not recovered by the end);
- exposure     = bars with at least one position open / bars (`BacktestResult.exposure`, the engine's);
- trades per day = trades / days covered by the bars (bars x 1 min / 1 day);
- fees paid    = sum of entry and exit fees.

Daily rows: [day, net P&L = equity change over the UTC day (realised + change of the open positions' marks),
trades closed that day, fees paid that day (entry fee on the entry day, exit fee on the exit day)]; the first
day is measured from the start capital. Monthly returns: `sample_returns(equity, "ME")`. The distribution of
trade returns: a histogram of each trade's net P&L / entry notional, in %.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from apps.engine.backtest import BacktestResult, Trade
from apps.engine.performance import (
    max_drawdown,
    sample_returns,
    sharpe_ratio,
    sortino_ratio,
    trade_stats,
)

DAYS_PER_YEAR = 365  # crypto: every calendar day is a trading day
_MINUTE_NS = 60_000_000_000
_DAY_NS = 86_400_000_000_000
HIST_BINS = 40  # at most; fewer with few trades (see _distribution)

FORMULAS = {
    "net_pnl": "net P&L = final equity − start capital = Σ realised gross P&L − Σ fees (open positions closed "
               "at the last close)",
    "return_pct": "return = net P&L ÷ start capital",
    "win_rate": "win rate = winning trades ÷ closed trades; a win is net P&L (after fees) > 0",
    "profit_factor": "profit factor = gross profit ÷ gross loss = Σ winning net P&L ÷ |Σ losing net P&L|",
    "sharpe": "Sharpe = mean(r) ÷ std(r, ddof=1) × √365; r = daily simple returns of the equity curve (last "
              "equity of each UTC day), risk-free rate 0; 365 because crypto trades every day",
    "sortino": "Sortino = mean(r) ÷ √mean(min(r, 0)²) × √365 over all daily returns r (target return 0)",
    "max_drawdown": "max drawdown = max over bars t of (peak_t − equity_t) ÷ peak_t; equity marked at each "
                    "bar's close",
    "exposure": "exposure = bars with a position open ÷ bars",
    "trades_per_day": "trades per day = closed trades ÷ days of bars (bars × 1 min ÷ 24 h)",
    "fees": "fees paid = Σ entry fees + Σ exit fees",
    "trades": "closed round trips (entry and exit)",
}


def num(x: Any) -> float | None:
    """A JSON-safe float: None for None/NaN/±inf."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def _iso(t: pd.Timestamp | None) -> str | None:
    return None if t is None else pd.Timestamp(t).isoformat()


@dataclasses.dataclass(frozen=True)
class Report:
    """summary / ghost_figures / daily in the JSON shapes BacktestRun stores; times_ms + equity: the series."""

    summary: dict[str, Any]
    ghost_figures: list[dict[str, Any]]
    daily: list[list[Any]]
    times_ms: np.ndarray
    equity: np.ndarray

    def figure(self, key: str) -> float | None:
        return next(f["value"] for f in self.summary["figures"] if f["key"] == key)


def drawdown_dates(equity: pd.Series) -> dict[str, Any]:
    """{"max_pct", "peak", "trough", "recovery"} of the deepest fall of `equity` (module docstring)."""
    e = equity.to_numpy(np.float64)
    if len(e) < 2:
        return {"max_pct": 0.0, "peak": None, "trough": None, "recovery": None}
    dd_max = max_drawdown(e)
    if dd_max <= 0:
        return {"max_pct": 0.0, "peak": None, "trough": None, "recovery": None}
    peak = np.maximum.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (peak - e) / peak, 0.0)
    trough = int(np.argmax(dd))
    at_peak = np.flatnonzero(e[: trough + 1] >= peak[trough])
    peak_i = int(at_peak[-1])
    later = np.flatnonzero(e[trough:] >= peak[trough])
    idx = equity.index
    return {"max_pct": dd_max * 100, "peak": _iso(idx[peak_i]), "trough": _iso(idx[trough]),
            "recovery": _iso(idx[trough + int(later[0])]) if len(later) else None}


def trade_return_pct(t: Trade) -> float:
    """Net P&L of one trade as % of its entry notional (entry price x quantity)."""
    notional = float(t.entry_price) * float(t.qty)
    return float(t.net_pnl) / notional * 100 if notional > 0 else math.nan


def _distribution(returns: Sequence[float], bins: int = HIST_BINS) -> dict[str, Any]:
    r = np.asarray([x for x in returns if math.isfinite(x)], dtype=np.float64)
    if len(r) == 0:
        return {"edges": [], "counts": [], "unit": "%"}
    k = int(min(bins, max(5, math.ceil(math.sqrt(len(r))))))  # ~sqrt(n) bins, 5..40
    counts, edges = np.histogram(r, bins=k)
    return {"edges": [round(float(x), 6) for x in edges], "counts": counts.tolist(), "unit": "%"}


def _daily(result: BacktestResult, equity: pd.Series, start_capital: float) -> list[list[Any]]:
    if len(equity) == 0:
        return []
    levels = equity.resample("1D").last().ffill()
    pnl = levels.diff()
    pnl.iloc[0] = levels.iloc[0] - start_capital
    days = [d.strftime("%Y-%m-%d") for d in levels.index]
    trades = dict.fromkeys(days, 0)
    fees = dict.fromkeys(days, 0.0)
    for t in result.trades:
        ed, xd = pd.Timestamp(t.entry_time).strftime("%Y-%m-%d"), pd.Timestamp(t.exit_time).strftime("%Y-%m-%d")
        trades[xd] = trades.get(xd, 0) + 1
        fees[ed] = fees.get(ed, 0.0) + float(t.entry_fee)
        fees[xd] = fees.get(xd, 0.0) + float(t.exit_fee)
    return [[d, round(float(p), 8), trades[d], round(fees[d], 8)] for d, p in zip(days, pnl.to_numpy(), strict=True)]


def _monthly(equity: pd.Series) -> list[list[Any]]:
    if len(equity) == 0:
        return []
    rets = sample_returns(equity, "ME")
    levels = equity.resample("ME").last().ffill()
    prev = levels.shift(1)
    prev.iloc[0] = float(equity.iloc[0])
    return [[t.strftime("%Y-%m"), num(r * 100), num(lv - pv)]
            for t, r, lv, pv in zip(rets.index, rets.to_numpy(), levels.to_numpy(), prev.to_numpy(), strict=True)]


def _fmt(value: float | None, unit: str, places: int = 2) -> str:
    if value is None:
        return "n/a"
    if unit == "%":
        return f"{value:.{places}f} %"
    return f"{value:,.{places}f}" + (f" {unit}" if unit else "")


def _figures(result: BacktestResult, equity: pd.Series, quote: str) -> tuple[list[dict[str, Any]], dict]:
    cap = float(result.start_capital)
    net = float(result.final_equity - result.start_capital)
    pnls = [float(t.net_pnl) for t in result.trades]
    n, wins, wr, gp, gl, pf = trade_stats(pnls)
    rets = sample_returns(equity, "1D")
    sharpe = sharpe_ratio(rets, DAYS_PER_YEAR)
    sortino = sortino_ratio(rets, DAYS_PER_YEAR)
    dd = drawdown_dates(equity)
    days = len(equity) * _MINUTE_NS / _DAY_NS
    fees = float(sum((t.entry_fee + t.exit_fee for t in result.trades), start=0))
    exposure = result.exposure  # the engine's: entry bar through exit bar of each trade, both included
    few = f"fewer than 2 daily returns ({len(rets)})"

    def fig(key: str, label: str, value: float | None, unit: str, sample: str, display: str | None = None,
            na_why: str = "") -> dict[str, Any]:
        v = num(value)
        return {"key": key, "label": label, "value": v, "unit": unit, "display": display or _fmt(v, unit),
                "formula": FORMULAS[key], "sample": sample, "na_why": na_why if v is None else ""}

    trades_s = f"{n} closed trade{'s' if n != 1 else ''}"
    daily_s = f"{len(rets)} daily returns"
    pf_display = None
    if math.isinf(pf):
        pf_display = "∞ (no losing trade)"
    figures = [
        fig("net_pnl", "Net P&L", net, quote, f"start capital {cap:,.2f} {quote}"),
        fig("return_pct", "Return", net / cap * 100 if cap else None, "%", f"start capital {cap:,.2f} {quote}"),
        fig("win_rate", "Win rate", wr * 100 if n else None, "%", f"{wins} of {trades_s}", na_why="no trades"),
        fig("profit_factor", "Profit factor", pf, "", f"{trades_s}: +{gp:.2f} / −{gl:.2f} {quote}", pf_display,
            na_why="no trades" if n == 0 else "no profit and no loss"),
        fig("sharpe", "Sharpe (daily, ×√365)", sharpe, "", daily_s,
            na_why=few if len(rets) < 2 else "daily returns did not vary"),
        fig("sortino", "Sortino (daily, ×√365)", sortino, "", daily_s,
            "∞ (no losing day)" if math.isinf(sortino) else None,
            na_why=few if len(rets) < 2 else "no losing day and no gain"),
        fig("max_drawdown", "Max drawdown", dd["max_pct"], "%", f"{len(equity)} bar closes"),
        fig("exposure", "Exposure", exposure * 100, "%", f"{len(equity)} bars"),
        fig("trades_per_day", "Trades per day", n / days if days else None, "", f"{trades_s} over {days:.2f} days"),
        fig("fees", "Fees paid", fees, quote, trades_s),
        fig("trades", "Trades", n, "", trades_s, display=str(n)),
    ]
    return figures, dd


def _ghost_figures(result: BacktestResult, kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    fates = result.fate_counts()
    out = []
    for g in result.ghosts:
        p = result.performance.get(g.name)
        mine = [t for t in result.trades if t.ghost_id == g.ghost_id]
        sig = result.signals.loc[g.name] if g.name in result.signals.index else None
        fc = {}
        if len(fates) and g.name in fates.index:
            fc = {str(k): int(v) for k, v in fates.loc[g.name].items() if int(v)}
        dis = next((e for e in result.disables if e.ghost_id == g.ghost_id), None)
        out.append({
            "ghost": g.name, "kind": kinds.get(g.name, g.kind),
            "trades": p.trades if p else 0, "wins": p.wins if p else 0,
            "win_rate": num(p.win_rate * 100) if p and p.trades else None,
            "profit_factor": num(p.profit_factor) if p else None,
            "net_pnl": num(p.net_pnl) if p else 0.0,
            "fees": float(sum((t.entry_fee + t.exit_fee for t in mine), start=0)),
            "sharpe": num(p.sharpe) if p else None, "sortino": num(p.sortino) if p else None,
            "max_drawdown_pct": num(p.max_drawdown * 100) if p else None,
            "longs": int(sig["longs"]) if sig is not None else 0,
            "shorts": int(sig["shorts"]) if sig is not None else 0,
            "idle_reason": str(sig["idle_reason"]) if sig is not None else "",
            "fates": fc,
            "disabled": {"time": _iso(dis.time), "reasons": list(dis.reasons)} if dis else None,
        })
    return out


def report_build(result: BacktestResult, *, quote: str = "USDT") -> Report:
    """Headline figures, drawdown dates, monthly returns, distribution, per-ghost figures, daily rows and the
    full-resolution equity series of one run (module docstring)."""
    equity = result.equity.astype(np.float64)
    cap = float(result.start_capital)
    figures, dd = _figures(result, equity, quote)
    notes = []
    if result.kill_switch:
        notes.append(f"kill switch tripped at {_iso(result.kill_switch[0])}: {result.kill_switch[1]}")
    if result.unfilled:
        notes.append(f"{len(result.unfilled)} draft(s) taken on the last bar had no next open to fill")
    summary = {
        "figures": figures,
        "drawdown": dd,
        "monthly": _monthly(equity),
        "distribution": _distribution([trade_return_pct(t) for t in result.trades]),
        "start_capital": cap,
        "final_equity": float(result.final_equity),
        "bars": len(equity),
        "first_bar": _iso(equity.index[0]) if len(equity) else None,
        "last_bar": _iso(equity.index[-1]) if len(equity) else None,
        "kill_switch": ({"time": _iso(result.kill_switch[0]), "reason": result.kill_switch[1]}
                        if result.kill_switch else None),
        "disables": [{"time": _iso(e.time), "ghost": e.ghost, "reasons": list(e.reasons)} for e in result.disables],
        "unfilled": len(result.unfilled),
        "notes": notes,
    }
    kinds = {g.name: g.kind for g in result.ghosts}
    times_ms = pd.DatetimeIndex(equity.index).as_unit("ms").asi8.astype(np.int64)
    return Report(summary=summary, ghost_figures=_ghost_figures(result, kinds), daily=_daily(result, equity, cap),
                  times_ms=times_ms, equity=equity.to_numpy(np.float64).copy())
