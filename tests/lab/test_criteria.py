"""apps.engine.criteria: the seed's gates on hand-worked daily P&L and figures."""

import pytest

from apps.engine.criteria import Gates, gates_judge, longest_profitable_streak, worst_daily_loss_pct
from apps.engine.types import ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401


def days(pnls: list[float]) -> list[tuple[str, float]]:
    return [(f"2025-03-{k + 1:02d}", p) for k, p in enumerate(pnls)]


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


def test_streak_and_worst_day_by_hand() -> None:
    assert longest_profitable_streak([1, 2, 0, 3, 4, 5, -1, 6]) == 3  # a flat day ends a streak
    assert longest_profitable_streak([]) == 0
    # day 0: -100 of 10,000 = 1 %; day 1 starts at 9,900: -297 = 3 %; day 2 gain
    worst, at = worst_daily_loss_pct([-100, -297, 50], 10_000)
    assert (worst, at) == (pytest.approx(3.0), 1)
    assert worst_daily_loss_pct([5, 6], 10_000) == (0.0, 0)
    assert worst_daily_loss_pct([], 10_000) is None


def test_every_gate_passes_just_above_its_threshold() -> None:
    pnl = [90.0] * 10 + [-300.0]  # ten profitable days, then a loss of 300 of 10,900 = 2.75 %
    rows = by_name(gates_judge(Gates(), daily=days(pnl), capital=10_000, trades=20, win_rate=60.5, sharpe=1.51,
                               max_drawdown_pct=14.9))
    assert [r["phase"] for r in rows.values()] == [1, 1, 1, 1, 2, 2]
    assert all(r["passed"] for r in rows.values()), rows
    assert rows["profitable_streak"]["value"] == 10
    assert rows["daily_loss"]["value"] == pytest.approx(300 / 10_900 * 100)
    assert rows["daily_profit"]["value"] == pytest.approx(600 / 11)  # (900 - 300) / 11 = 54.5 > 50
    assert rows["daily_profit"]["threshold"] == 50.0


def test_each_gate_fails_at_its_threshold() -> None:
    pnl = [50.0] * 9 + [0.0, -301.0]  # streak 9, then a loss of 301 on a start equity of 10,450
    rows = by_name(gates_judge(Gates(), daily=days(pnl), capital=10_000, trades=20, win_rate=60.0, sharpe=1.5,
                               max_drawdown_pct=15.0))
    assert not rows["win_rate"]["passed"] and not rows["sharpe"]["passed"] and not rows["max_drawdown"]["passed"]
    assert not rows["profitable_streak"]["passed"] and rows["profitable_streak"]["value"] == 9
    assert rows["daily_loss"]["passed"]  # 301 / 10,450 = 2.88 % <= 3 %
    assert not rows["daily_profit"]["passed"]  # mean (450 - 301) / 11 = 13.5 <= 50
    assert rows["daily_profit"]["value"] == pytest.approx(149 / 11)
    assert "13.55" in rows["daily_profit"]["text"]


def test_daily_profit_bar_scales_with_capital() -> None:
    # 50 per 10,000 -> 100 per 20,000: a mean of 99 fails, 101 passes
    low = by_name(gates_judge(Gates(), daily=days([99.0, 99.0]), capital=20_000, trades=2, win_rate=100, sharpe=5,
                              max_drawdown_pct=0))
    high = by_name(gates_judge(Gates(), daily=days([101.0, 101.0]), capital=20_000, trades=2, win_rate=100,
                               sharpe=5, max_drawdown_pct=0))
    assert low["daily_profit"]["threshold"] == 100.0 and not low["daily_profit"]["passed"]
    assert high["daily_profit"]["passed"]


def test_a_daily_loss_beyond_the_limit_fails_and_names_the_day() -> None:
    rows = by_name(gates_judge(Gates(), daily=days([100.0, -304.0]), capital=10_000, trades=3, win_rate=70,
                               sharpe=2, max_drawdown_pct=3))
    assert not rows["daily_loss"]["passed"]  # 304 / 10,100 = 3.01 %
    assert rows["daily_loss"]["value"] == pytest.approx(304 / 10_100 * 100)
    assert "2025-03-02" in rows["daily_loss"]["text"]


def test_undefined_figures_fail_with_a_reason() -> None:
    rows = by_name(gates_judge(Gates(), daily=[], capital=10_000, trades=0, win_rate=None, sharpe=float("nan"),
                               max_drawdown_pct=0.0))
    assert not any(r["passed"] for r in rows.values())
    assert rows["win_rate"]["value"] is None and "no closed trades" in rows["win_rate"]["text"]
    assert rows["sharpe"]["value"] is None and "undefined" in rows["sharpe"]["text"]


def test_gates_are_validated() -> None:
    with pytest.raises(ConfigError, match="win_rate_min_pct"):
        Gates(win_rate_min_pct=120)
    with pytest.raises(ConfigError, match="capital_basis"):
        Gates.from_params({"capital_basis": 0})
    custom = by_name(gates_judge(Gates(win_rate_min_pct=40, profitable_streak_days=2), daily=days([1.0, 1.0]),
                                 capital=10_000, trades=5, win_rate=41, sharpe=0.1, max_drawdown_pct=1))
    assert custom["win_rate"]["passed"] and custom["profitable_streak"]["passed"]
