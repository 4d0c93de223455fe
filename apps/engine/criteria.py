"""The seed's success criteria as pass/fail gates with their numbers, pure (issue 9, "Success criteria").

Used for a lab run (from its report) and for the paper desk over a period (from the ledger's daily P&L and
performance figures); the same function judges both, so a run and the desk are held to the same bar.

Gates (defaults from the seed; `Gates` fields, editable by operators through apps.lab):
phase 1 - go from backtest to paper:
- win rate      > win_rate_min_pct (60 %)            over the closed trades (net P&L after fees > 0 = a win);
- Sharpe        > sharpe_min (1.5)                    daily returns, annualised with sqrt(365) (report.py);
- max drawdown  < max_drawdown_max_pct (15 %)         of the running equity peak;
- profitable streak >= profitable_streak_days (10)    the longest run of consecutive UTC days with net
                                                      P&L > 0 (a day without P&L, or a losing day, ends it);
phase 2 - go from paper to live:
- no daily loss > daily_loss_max_pct (3 %)            every day's net P&L >= -3 % of that day's START equity
                                                      (start capital + the P&L of the days before);
- daily profit  > daily_profit_min per capital_basis  the MEAN daily net P&L over the period, compared with
  (50 per 10,000)                                     daily_profit_min x capital / capital_basis (50 USD on
                                                      10,000 is 0.5 % a day; with 20,000 the bar is 100).

A gate whose figure is undefined (no trades, fewer than 2 days) fails, and its text says why: "not
enough data" is not a pass.
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from apps.engine.types import GhostConfig, check_range

PHASE_1, PHASE_2 = 1, 2


@dataclasses.dataclass(frozen=True)
class Gates(GhostConfig):
    """The thresholds; percentages are percent (60.0 = 60 %), money in quote currency."""

    KIND = "criteria"

    win_rate_min_pct: float = 60.0
    sharpe_min: float = 1.5
    max_drawdown_max_pct: float = 15.0
    profitable_streak_days: int = 10
    daily_loss_max_pct: float = 3.0
    daily_profit_min: float = 50.0
    capital_basis: float = 10_000.0

    def __post_init__(self) -> None:
        k = self.KIND
        check_range(k, "win_rate_min_pct", self.win_rate_min_pct, 0, 100, unit="%")
        check_range(k, "sharpe_min", self.sharpe_min, -100, 100)
        check_range(k, "max_drawdown_max_pct", self.max_drawdown_max_pct, 0, 100, lo_open=True, unit="%")
        check_range(k, "profitable_streak_days", self.profitable_streak_days, 1, 3650, unit="days")
        check_range(k, "daily_loss_max_pct", self.daily_loss_max_pct, 0, 100, lo_open=True, unit="%")
        check_range(k, "daily_profit_min", self.daily_profit_min, 0, 1e12, unit="quote currency")
        check_range(k, "capital_basis", self.capital_basis, 0, 1e15, lo_open=True, unit="quote currency")


def longest_profitable_streak(daily_pnl: Sequence[float]) -> int:
    """Longest run of consecutive entries > 0."""
    best = run = 0
    for p in daily_pnl:
        run = run + 1 if p > 0 else 0
        best = max(best, run)
    return best


def worst_daily_loss_pct(daily_pnl: Sequence[float], capital: float) -> tuple[float, int] | None:
    """(largest daily loss as % of that day's start equity, its index), or None without days; a day with a
    gain counts as a loss of 0. Start equity of day k = capital + sum of days 0..k-1."""
    if not daily_pnl:
        return None
    start = capital
    worst, at = 0.0, 0
    for k, p in enumerate(daily_pnl):
        if start > 0 and p < 0 and -p / start * 100 > worst:
            worst, at = -p / start * 100, k
        start += p
    return worst, at


def _row(phase: int, name: str, passed: bool, value: float | None, threshold: float, text: str) -> dict[str, Any]:
    v = None if value is None or not math.isfinite(value) else float(value)
    return {"phase": phase, "name": name, "passed": bool(passed), "value": v, "threshold": float(threshold),
            "text": text}


def gates_judge(gates: Gates, *, daily: Sequence[tuple[str, float]], capital: float, trades: int,
                win_rate: float | None, sharpe: float | None, max_drawdown_pct: float | None) -> list[dict[str, Any]]:
    """Each gate as {"phase", "name", "passed", "value", "threshold", "text"}.

    daily: (UTC day "YYYY-MM-DD", net P&L) for EVERY day of the period in order (days without P&L as 0);
    capital: equity at the start of the period; win_rate in % (None/NaN: undefined); sharpe annualised
    with sqrt(365); max_drawdown_pct in %.
    """
    out = []
    g = gates
    if trades and win_rate is not None and math.isfinite(win_rate):
        ok = win_rate > g.win_rate_min_pct
        text = f"win rate {win_rate:.1f} % over {trades} trades {'>' if ok else '<='} {g.win_rate_min_pct:g} %"
    else:
        ok, win_rate, text = False, None, f"win rate undefined: no closed trades (needs > {g.win_rate_min_pct:g} %)"
    out.append(_row(PHASE_1, "win_rate", ok, win_rate, g.win_rate_min_pct, text))

    if sharpe is not None and math.isfinite(sharpe):
        ok = sharpe > g.sharpe_min
        text = f"Sharpe {sharpe:.2f} (daily, ×√365) {'>' if ok else '<='} {g.sharpe_min:g}"
    else:
        ok, sharpe = False, None
        text = f"Sharpe undefined: fewer than 2 daily returns or no variation (needs > {g.sharpe_min:g})"
    out.append(_row(PHASE_1, "sharpe", ok, sharpe, g.sharpe_min, text))

    if max_drawdown_pct is not None and math.isfinite(max_drawdown_pct) and trades:
        ok = max_drawdown_pct < g.max_drawdown_max_pct
        text = f"max drawdown {max_drawdown_pct:.2f} % {'<' if ok else '>='} {g.max_drawdown_max_pct:g} %"
    else:
        ok, max_drawdown_pct = False, None
        text = f"max drawdown not judged: no closed trades (needs < {g.max_drawdown_max_pct:g} %)"
    out.append(_row(PHASE_1, "max_drawdown", ok, max_drawdown_pct, g.max_drawdown_max_pct, text))

    pnl = [float(p) for _, p in daily]
    streak = longest_profitable_streak(pnl)
    ok = streak >= g.profitable_streak_days
    out.append(_row(PHASE_1, "profitable_streak", ok, streak, g.profitable_streak_days,
                    f"longest run of profitable days {streak} {'>=' if ok else '<'} {g.profitable_streak_days}"
                    f" (over {len(pnl)} days)"))

    worst = worst_daily_loss_pct(pnl, capital)
    if worst is None:
        out.append(_row(PHASE_2, "daily_loss", False, None, g.daily_loss_max_pct,
                        f"no days in the period (needs no daily loss > {g.daily_loss_max_pct:g} %)"))
    else:
        w, at = worst
        ok = w <= g.daily_loss_max_pct
        day = daily[at][0]
        text = (f"worst day {day}: loss {w:.2f} % of its start equity {'<=' if ok else '>'} "
                f"{g.daily_loss_max_pct:g} %") if w > 0 else "no losing day"
        out.append(_row(PHASE_2, "daily_loss", ok, w, g.daily_loss_max_pct, text))

    bar = g.daily_profit_min * capital / g.capital_basis if capital > 0 else math.inf
    if pnl:
        mean = sum(pnl) / len(pnl)
        ok = mean > bar
        text = (f"mean daily net P&L {mean:.2f} over {len(pnl)} days {'>' if ok else '<='} {bar:.2f} "
                f"({g.daily_profit_min:g} per {g.capital_basis:,.0f} of capital {capital:,.2f})")
    else:
        mean, ok = None, False
        text = f"no days in the period (needs a mean daily profit > {bar:.2f})"
    out.append(_row(PHASE_2, "daily_profit", ok, mean, bar, text))
    return out


def gates_from_report(gates: Gates, summary: dict[str, Any], daily: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """`gates_judge` on a run's stored report (apps.engine.report shapes)."""
    figs = {f["key"]: f["value"] for f in summary["figures"]}
    return gates_judge(gates, daily=[(d[0], float(d[1])) for d in daily], capital=float(summary["start_capital"]),
                       trades=int(figs["trades"] or 0), win_rate=figs["win_rate"], sharpe=figs["sharpe"],
                       max_drawdown_pct=figs["max_drawdown"])
