"""apps.engine.report on a hand-built BacktestResult: three trades over three days whose figures are worked
out here by hand (not read back from the code). Hand-built rather than run through the engine, so each
expected number follows from the inputs written below."""

import dataclasses
import math
import statistics
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.engine.backtest import BacktestResult, GhostSetup, Trade
from apps.engine.performance import performance
from apps.engine.report import drawdown_dates, report_build
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

T = pd.Timestamp
IDX = pd.date_range("2025-03-01 00:00", periods=3 * 1440, freq="1min", tz="UTC", name="open_time")


def trade(gid: int, name: str, side: int, entry: str, exit_: str, entry_px: str, exit_px: str, reason: str) -> Trade:
    e, x = Decimal(entry_px), Decimal(exit_px)
    return Trade(ghost_id=gid, ghost=name, side=side, signal_time=T(entry, tz="UTC") - pd.Timedelta("1min"),
                 entry_time=T(entry, tz="UTC"), entry_price=e, exit_time=T(exit_, tz="UTC"), exit_price=x,
                 qty=Decimal(1), stop=0.0, target=0.0, entry_fee=Decimal(1), exit_fee=Decimal(1),
                 gross_pnl=(x - e) * side, reason=reason)


# A: g1 long 1000 -> 1102: gross +102, fees 2, net +100 (day 1, 10:00-10:30)
# B: g2 short 1000 -> 1048: gross -48, fees 2, net -50   (day 2, 12:00-13:00); marked down to 10,000 at 12:30
# C: g1 long 2000 -> 2102: gross +102, fees 2, net +100  (day 3, 08:00-09:00)
TRADES = (
    trade(1, "g1", 1, "2025-03-01 10:00", "2025-03-01 10:30", "1000", "1102", "target"),
    trade(2, "g2", -1, "2025-03-02 12:00", "2025-03-02 13:00", "1000", "1048", "stop"),
    trade(1, "g1", 1, "2025-03-03 08:00", "2025-03-03 09:00", "2000", "2102", "target"),
)


def equity_curve() -> pd.Series:
    e = pd.Series(10_000.0, index=IDX, name="equity")
    e[T("2025-03-01 10:30", tz="UTC"):] = 10_100.0
    e[T("2025-03-02 12:30", tz="UTC"):T("2025-03-02 12:59", tz="UTC")] = 10_000.0  # B marked at its worst
    e[T("2025-03-02 13:00", tz="UTC"):] = 10_050.0
    e[T("2025-03-03 09:00", tz="UTC"):] = 10_150.0
    return e


def result() -> BacktestResult:
    ghosts = (GhostSetup(ghost_id=1, name="g1", kind="spike_fader"),
              GhostSetup(ghost_id=2, name="g2", kind="cvd_detector"))
    fates = pd.DataFrame([
        (T("2025-03-01 09:59", tz="UTC"), 1, "g1", 1, "taken", "", 0.7),
        (T("2025-03-01 11:00", tz="UTC"), 1, "g1", -1, "blocked_risk", "max_open", 0.6),
        (T("2025-03-02 11:59", tz="UTC"), 2, "g2", -1, "taken", "", 0.6),
        (T("2025-03-03 07:59", tz="UTC"), 1, "g1", 1, "taken", "", 0.7),
    ], columns=["bar_time", "ghost_id", "ghost", "side", "fate", "detail", "score"])
    perf = {}
    for g in ghosts:
        mine = [t for t in TRADES if t.ghost_id == g.ghost_id]
        levels = 10_000 + np.cumsum([float(t.net_pnl) for t in mine])
        perf[g.name] = performance([float(t.net_pnl) for t in mine],
                                   pd.Series([10_000.0, *levels], index=[IDX[0]] + [t.exit_time for t in mine]))
    signals = pd.DataFrame([{"ghost": "g1", "longs": 2, "shorts": 1, "idle_reason": ""},
                            {"ghost": "g2", "longs": 0, "shorts": 1, "idle_reason": "no taker split"}])
    signals = signals.set_index("ghost")
    kw = dict(ghosts=ghosts, start_capital=Decimal(10_000), final_equity=Decimal(10_150), trades=TRADES, fates=fates,
              equity=equity_curve(), performance=perf, disables=(), kill_switch=None, unfilled=(), signals=signals,
              exposure=153 / 4320)
    return BacktestResult(**kw)


def figs(rep) -> dict:
    return {f["key"]: f["value"] for f in rep.summary["figures"]}


def test_headline_figures_by_hand() -> None:
    rep = report_build(result())
    f = figs(rep)
    assert f["net_pnl"] == pytest.approx(150.0)
    assert f["return_pct"] == pytest.approx(1.5)  # 150 / 10,000
    assert f["win_rate"] == pytest.approx(200 / 3)  # A and C of 3 trades
    assert f["profit_factor"] == pytest.approx(4.0)  # (100 + 100) / 50
    assert f["fees"] == pytest.approx(6.0) and f["trades"] == 3
    assert f["trades_per_day"] == pytest.approx(1.0)  # 3 trades over 4,320 one-minute bars = 3 days
    # exposure (the engine's fraction, shown in %): A holds 10:00..10:30 (31 bars), B 12:00..13:00 (61),
    # C 08:00..09:00 (61), of 4,320
    assert f["exposure"] == pytest.approx(153 / 4320 * 100)
    # daily returns sampled at each UTC day's last equity; the first from the curve's first point
    r = [10_100 / 10_000 - 1, 10_050 / 10_100 - 1, 10_150 / 10_050 - 1]
    assert f["sharpe"] == pytest.approx(statistics.mean(r) / statistics.stdev(r) * math.sqrt(365))
    downside = math.sqrt(sum(min(x, 0) ** 2 for x in r) / 3)
    assert f["sortino"] == pytest.approx(statistics.mean(r) / downside * math.sqrt(365))
    # deepest fall: 10,100 -> 10,000 while B is marked at its worst
    assert f["max_drawdown"] == pytest.approx(100 / 10_100 * 100)
    assert all(fig["formula"] for fig in rep.summary["figures"])


def test_drawdown_dates_by_hand() -> None:
    dd = report_build(result()).summary["drawdown"]
    assert dd["peak"] == "2025-03-02T12:29:00+00:00"  # the last bar at 10,100 before the fall
    assert dd["trough"] == "2025-03-02T12:30:00+00:00"
    assert dd["recovery"] == "2025-03-03T09:00:00+00:00"  # first close back at or above 10,100 (10,150)
    e = equity_curve()
    e[T("2025-03-03 09:00", tz="UTC"):] = 10_050.0  # C never happened: no recovery by the end
    assert drawdown_dates(e)["recovery"] is None
    assert drawdown_dates(pd.Series(10_000.0, index=IDX))["max_pct"] == 0.0


def test_daily_monthly_and_distribution_by_hand() -> None:
    rep = report_build(result())
    assert rep.daily == [["2025-03-01", 100.0, 1, 2.0], ["2025-03-02", -50.0, 1, 2.0], ["2025-03-03", 100.0, 1, 2.0]]
    assert rep.summary["monthly"] == [["2025-03", pytest.approx(1.5), pytest.approx(150.0)]]
    dist = rep.summary["distribution"]
    assert sum(dist["counts"]) == 3 and len(dist["edges"]) == len(dist["counts"]) + 1
    # trade returns: +100/1000 = 10 %, -50/1000 = -5 %, +100/2000 = 5 %
    assert dist["edges"][0] == pytest.approx(-5.0) and dist["edges"][-1] == pytest.approx(10.0)


def test_ghost_figures_and_series() -> None:
    rep = report_build(result())
    g1, g2 = rep.ghost_figures
    assert (g1["ghost"], g1["kind"], g1["trades"], g1["net_pnl"], g1["fees"]) == ("g1", "spike_fader", 2, 200.0, 4.0)
    assert g1["fates"] == {"taken": 2, "blocked_risk": 1} and g1["win_rate"] == 100.0
    assert g1["profit_factor"] is None  # +inf (no losing trade) is not JSON: None, the display says why
    assert (g2["trades"], g2["net_pnl"], g2["win_rate"], g2["idle_reason"]) == (1, -50.0, 0.0, "no taker split")
    assert len(rep.times_ms) == len(rep.equity) == 4320
    assert rep.times_ms[0] == int(IDX[0].timestamp() * 1000) and rep.equity[-1] == 10_150.0
    pf = next(f for f in rep.summary["figures"] if f["key"] == "profit_factor")
    assert pf["value"] == 4.0 and pf["display"] == "4.00"


def test_no_trades_gives_nulls_with_reasons_not_nan() -> None:
    res = dataclasses.replace(result(), trades=(), final_equity=Decimal(10_000),
                              equity=pd.Series(10_000.0, index=IDX), fates=result().fates.iloc[:0], exposure=0.0)
    f = {x["key"]: x for x in report_build(res).summary["figures"]}
    assert f["win_rate"]["value"] is None and f["win_rate"]["display"] == "n/a" and f["win_rate"]["na_why"]
    assert f["profit_factor"]["value"] is None and f["sharpe"]["value"] is None
    assert f["net_pnl"]["value"] == 0.0 and f["exposure"]["value"] == 0.0
