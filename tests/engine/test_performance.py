"""Performance figures against hand-worked examples (the prototype's were wrong: negative profit factor,
Sharpe in the hundreds, never computed; prototype-notes §0.6, §5)."""

import math

import pandas as pd
import pytest

from apps.engine.performance import (
    AutoDisableRules,
    ScoreWeights,
    max_drawdown,
    performance,
    performance_score,
    rules_breached,
    sample_returns,
    sharpe_ratio,
    sortino_ratio,
    trade_stats,
)
from apps.engine.types import ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401


def test_trade_stats_by_hand() -> None:
    # wins 30 + 10 = 40, losses 20 + 5 = 25 -> PF = 40 / 25 = 1.6; 2 of 4 won
    n, wins, wr, gp, gl, pf = trade_stats([30.0, -20.0, 10.0, -5.0])
    assert (n, wins, wr, gp, gl) == (4, 2, 0.5, 40.0, 25.0)
    assert pf == pytest.approx(1.6)
    assert trade_stats([5.0, 0.0])[5] == math.inf  # no losing trade: +inf, not a division error
    assert trade_stats([5.0, 0.0])[2] == 0.5  # a break-even trade is not a win
    assert math.isnan(trade_stats([])[5]) and math.isnan(trade_stats([])[2])
    assert trade_stats([-1.0, -3.0])[5] == 0.0  # all losses: PF 0, never negative


def test_profit_factor_is_never_negative_even_when_the_net_is() -> None:
    pf = trade_stats([1.0, -10.0, 2.0])[5]
    assert pf == pytest.approx(0.3) and pf >= 0


def test_sharpe_and_sortino_by_hand() -> None:
    r = [0.01, -0.02, 0.03, 0.0]
    # mean 0.005; sample std: deviations .005 -.025 .025 -.005 -> squares sum .00130 / 3 -> sd .0208167
    assert sharpe_ratio(r, 365) == pytest.approx(0.005 / 0.0208166600 * math.sqrt(365), rel=1e-7)
    # downside deviation sqrt((0 + .0004 + 0 + 0) / 4) = 0.01 -> 0.005 / 0.01 * sqrt(365)
    assert sortino_ratio(r, 365) == pytest.approx(0.5 * math.sqrt(365))
    assert math.isnan(sharpe_ratio([0.01], 365)) and math.isnan(sharpe_ratio([0.01, 0.01], 365))
    assert sortino_ratio([0.01, 0.02], 365) == math.inf


def test_returns_are_sampled_in_time_not_per_trade() -> None:
    t = pd.to_datetime(["2026-01-01 10:00", "2026-01-01 18:00", "2026-01-03 09:00"], utc=True)
    equity = pd.Series([100.0, 110.0, 99.0], index=t)
    r = sample_returns(equity, "1D")
    # day 1 ends at 110 (from 100): +10 %; day 2 has no trade: flat 0 %; day 3 ends at 99: -10 %
    assert r.round(12).tolist() == [0.1, 0.0, -0.1]


def test_max_drawdown_by_hand() -> None:
    assert max_drawdown([100, 120, 90, 130, 117]) == pytest.approx(0.25)  # 120 -> 90
    assert max_drawdown([100, 101, 102]) == 0.0
    assert max_drawdown([100]) == 0.0


def test_performance_bundle_and_target_progress() -> None:
    t = pd.date_range("2026-01-01", periods=4, freq="1D", tz="UTC")
    equity = pd.Series([10_000.0, 10_030.0, 10_010.0, 10_020.0], index=t)
    perf = performance([30.0, -20.0, 10.0], equity, period_pnl=20.0, target_amount=50.0)
    assert perf.trades == 3 and perf.net_pnl == 20.0 and perf.target_progress == pytest.approx(0.4)
    assert perf.max_drawdown == pytest.approx(20 / 10_030)
    assert perf.periods == 4 and math.isfinite(perf.sharpe)  # day 1 returns 0 from its own start
    with pytest.raises(ConfigError, match="freq must be one of"):
        performance([], equity, freq="2D")


def test_score_neutral_until_enough_trades_then_ordered() -> None:
    t = pd.date_range("2026-01-01", periods=3, freq="1D", tz="UTC")
    flat = pd.Series([100.0, 100.0, 100.0], index=t)
    assert performance_score(performance([1.0, 2.0], flat)) == 0.5
    good = performance([5, 5, 5, -1, 5, 5], pd.Series([100.0, 110.0, 124.0], index=t))
    bad = performance([-5, -5, 1, -5, -5, 1], pd.Series([100.0, 90.0, 80.0], index=t))
    assert 0 <= performance_score(bad) < 0.5 < performance_score(good) <= 1
    # bad by hand: win rate 2/6, PF 2/20 = .1 -> .05, Sharpe negative -> 0, drawdown 20 % -> 0, no target -> .5
    expected = 0.25 * (2 / 6) + 0.25 * 0.05 + 0.20 * 0 + 0.15 * 0 + 0.15 * 0.5
    assert performance_score(bad) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="add up to 1"):
        ScoreWeights(w_win_rate=0.5)


def test_auto_disable_rules_fire_with_numbers() -> None:
    t = pd.date_range("2026-01-01", periods=3, freq="1D", tz="UTC")
    equity = pd.Series([10_000.0, 9_950.0, 9_900.0], index=t)
    losing = performance([-10.0] * 8 + [5.0] * 2, equity)
    rules = AutoDisableRules()
    reasons = rules_breached(losing, rules, period_pnl=-90.0, target_amount=40.0)
    assert any(r.startswith("win rate 20.0% over 10 trades < floor 30%") for r in reasons)
    assert any("profit factor 0.12" in r for r in reasons)
    assert any("exceeds 2 x target 40.00 = 80.00" in r for r in reasons)
    assert rules_breached(performance([-10.0] * 5, equity), rules) == []  # too few trades to judge
    with pytest.raises(ConfigError, match="win_rate_floor"):
        AutoDisableRules.from_params({"win_rate_floor": 1.5})
