"""Window scores (apps.engine.objectives): hand-worked figures on a tiny equity path, every undefined case,
and the daily equity of a per-bar curve (gaps, partial days) against the lab's daily returns."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from apps.engine.objectives import OBJECTIVE_FORMULAS, OBJECTIVES, WindowScore, daily_equity, window_score
from apps.engine.performance import sample_returns
from apps.engine.types import ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401


@dataclass(frozen=True)
class T:
    exit_time: pd.Timestamp
    net_pnl: float


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


# Equity as of each midnight, daily returns r = +2 %, -1 %, +2 %, +1 %:
# 1000 -> 1020 -> 1009.8 -> 1029.996 -> 1040.29596
EQ = pd.Series([1000.0, 1020.0, 1009.8, 1029.996, 1040.29596],
               index=pd.DatetimeIndex([ts(f"2025-01-0{d}") for d in range(1, 6)]))
# exits: Jan 1 10:00 +30, Jan 2 05:00 -10, Jan 3 12:00 +25, Jan 5 00:00 +99 (the window's end: excluded)
TRADES = [T(ts("2025-01-01 10:00"), 30.0), T(ts("2025-01-02 05:00"), -10.0), T(ts("2025-01-03 12:00"), 25.0),
          T(ts("2025-01-05 00:00"), 99.0)]


def test_hand_worked_window_figures() -> None:
    s = window_score(EQ, TRADES, ts("2025-01-01"), ts("2025-01-05"), objective="sharpe", min_trades=1)
    # mean r = 0.04 / 4 = 0.01; deviations +0.01, -0.02, +0.01, 0 -> sum of squares 6e-4, / (4 - 1) = 2e-4,
    # std = 0.0141421; Sharpe = 0.01 / 0.0141421 x sqrt(365) = 0.707107 x 19.104973 = 13.50925
    assert s.sharpe == pytest.approx(13.50925, abs=1e-5)
    assert s.value == s.sharpe and s.reason == "" and s.days == 4
    # downside deviation = sqrt(mean(0, 1e-4, 0, 0)) = sqrt(2.5e-5) = 0.005; Sortino = 2 x 19.104973
    assert s.sortino == pytest.approx(38.20995, abs=1e-5)
    # three exits in [Jan 1, Jan 5): +30 -10 +25 -> profit factor 55 / 10
    assert s.trades == 3 and s.profit_factor == pytest.approx(5.5)
    # net = 1040.29596 - 1000; deepest fall 1020 -> 1009.8 = 1 % of the peak
    assert s.net_pnl == pytest.approx(40.29596) and s.return_pct == pytest.approx(4.029596)
    assert s.max_drawdown_pct == pytest.approx(1.0)
    # Calmar = (0.04029596 x 365 / 4) / 0.01 = 367.70064
    assert s.calmar == pytest.approx(367.70064, abs=1e-5)
    for obj, field in (("sortino", "sortino"), ("profit_factor", "profit_factor"), ("net_pnl", "net_pnl"),
                       ("calmar", "calmar")):
        assert window_score(EQ, TRADES, ts("2025-01-01"), ts("2025-01-05"), objective=obj,
                            min_trades=1).value == getattr(s, field)


def test_an_inner_window_takes_its_baseline_from_its_start() -> None:
    s = window_score(EQ, TRADES, ts("2025-01-02"), ts("2025-01-04"), objective="sharpe", min_trades=0)
    # levels 1020, 1009.8, 1029.996: r = -1 %, +2 %; mean 0.005, std = sqrt(2 x 0.015^2 / 1) = 0.0212132;
    # Sharpe = 0.235702 x 19.104973 = 4.50309; exits in [Jan 2, Jan 4): -10, +25 -> PF 2.5
    assert s.days == 2 and s.sharpe == pytest.approx(4.50309, abs=1e-5)
    assert s.trades == 2 and s.profit_factor == pytest.approx(2.5)
    assert s.net_pnl == pytest.approx(9.996)


def test_too_few_trades_leaves_the_value_undefined_but_keeps_the_figures() -> None:
    s = window_score(EQ, TRADES, ts("2025-01-01"), ts("2025-01-05"), objective="sharpe", min_trades=4)
    assert s.value is None and s.reason == "3 trades in the window < min_trades 4"
    assert s.sharpe == pytest.approx(13.50925, abs=1e-5)


@pytest.mark.parametrize(("objective", "start", "end", "reason"), [
    ("sharpe", "2025-01-02", "2025-01-03", "sharpe undefined: fewer than 2 daily returns (1)"),
    ("sortino", "2025-01-03", "2025-01-05", "sortino infinite: no losing day"),  # +2 %, +1 %
    ("profit_factor", "2025-01-03", "2025-01-05", "profit factor infinite: no losing trade"),  # +25 only
    ("profit_factor", "2025-01-04", "2025-01-05", "profit factor undefined: no trades"),
    ("calmar", "2025-01-03", "2025-01-05", "calmar infinite: no drawdown in the window"),
])
def test_undefined_or_infinite_objectives_say_why(objective: str, start: str, end: str, reason: str) -> None:
    s = window_score(EQ, TRADES, ts(start), ts(end), objective=objective, min_trades=0)
    assert s.value is None and s.reason == reason


def test_a_flat_window_has_no_sharpe() -> None:
    flat = pd.Series(1000.0, index=EQ.index)
    s = window_score(flat, [], ts("2025-01-01"), ts("2025-01-05"), objective="sharpe", min_trades=0)
    assert s.value is None and s.reason == "sharpe undefined: the daily returns did not vary"
    assert s.net_pnl == 0.0 and s.max_drawdown_pct == 0.0 and s.calmar is None


def test_as_dict_is_json_safe_and_round_trips() -> None:
    s = window_score(EQ, TRADES, ts("2025-01-03"), ts("2025-01-05"), objective="sortino", min_trades=0)
    d = s.as_dict()
    assert d["sortino"] is None and d["value"] is None  # +inf is not JSON
    assert WindowScore.from_dict(d) == s


def test_unknown_objective_is_refused_and_every_objective_has_a_formula() -> None:
    with pytest.raises(ConfigError, match="objective must be one of sharpe, sortino, profit_factor"):
        window_score(EQ, TRADES, ts("2025-01-01"), ts("2025-01-05"), objective="sharp", min_trades=0)
    assert set(OBJECTIVE_FORMULAS) == set(OBJECTIVES)


def test_daily_equity_of_a_per_bar_curve_with_a_gap_and_a_partial_last_day() -> None:
    # bars: Jan 1 23:58, 23:59, (gap: no bar on Jan 2), Jan 3 00:00, 00:01 and nothing after -> the last close
    # is Jan 3 00:02, not a midnight
    idx = pd.DatetimeIndex([ts("2025-01-01 23:58"), ts("2025-01-01 23:59"), ts("2025-01-03 00:00"),
                            ts("2025-01-03 00:01")])
    eq = pd.Series([1000.0, 1003.0, 998.0, 1001.0], index=idx)
    d = daily_equity(eq, 1000.0)
    # trading start (capital), Jan 2 (close of the Jan 1 23:59 bar), Jan 3 (carried through the empty day),
    # the last close
    assert list(d.index) == [ts("2025-01-01 23:58"), ts("2025-01-02"), ts("2025-01-03"), ts("2025-01-03 00:02")]
    assert d.tolist() == [1000.0, 1003.0, 1003.0, 1001.0]
    # the same daily returns as the lab's (performance.sample_returns), whose first return is measured from
    # the curve's first point (= the capital: nothing can fill on the first bar)
    lab = sample_returns(eq, "1D").to_numpy()
    assert np.array_equal(d.pct_change().to_numpy()[1:], lab)


def test_daily_equity_of_an_empty_curve_scores_as_undefined() -> None:
    d = daily_equity(pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float), 1000.0)
    s = window_score(d, [], ts("2025-01-01"), ts("2025-01-05"), objective="net_pnl", min_trades=0)
    assert len(d) == 0 and s.value is None and s.days == 0 and s.net_pnl is None
    assert s.reason == "net P&L undefined: no equity in the window"
