"""Risk rules and the signal manager (pure): fates, sizing, limits, conflicts, determinism."""

import math

import pandas as pd
import pytest

from apps.engine.manager import (
    BLOCKED_RISK,
    BLOCKED_TREND,
    CONFLICT,
    GHOST_DISABLED,
    OUTSCORED,
    STALE,
    TAKEN,
    Candidate,
    ManagerConfig,
    TrendGate,
    arbitrate,
    score,
)
from apps.engine.risk import (
    RiskDecision,
    RiskLimits,
    RiskState,
    daily_loss_breached,
    ghost_drawdown_breached,
    risk_check,
)
from apps.engine.types import ConfigError, Draft
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

BAR = pd.Timestamp("2026-03-02 10:00", tz="UTC")
NOW = BAR.timestamp() + 61  # one second after the bar closed


def draft(side: int, conf: float, priority: int = 2, size_mult: float = 1.0) -> Draft:
    entry = 100.0
    stop = entry * (1 - 0.01 * side)
    return Draft(side=side, confidence=conf, priority=priority, entry=entry, stop=stop,
                 target=entry * (1 + 0.01 * side), size_mult=size_mult, max_hold_s=3600, reason="t", bar_time=BAR)


def ok_risk(c: Candidate, mult: float) -> RiskDecision:
    return RiskDecision(True, quantity=round(mult, 6))


STATE = RiskState(equity=10_000, day_start_equity=10_000, open_positions=0, open_by_ghost={}, trades_today=0,
                  kill_switch=False)


def test_sizing_is_risk_over_stop_distance_capped_by_notional() -> None:
    lim = RiskLimits()
    # 1 % of 10 000 = 100 over a 1.0 stop distance = 100 units, but 10 % notional cap = 1 000 / 100 = 10
    d = risk_check(ghost_id=1, entry=100.0, stop=99.0, size_mult=1.0, state=STATE, limits=lim)
    assert d.ok and d.quantity == pytest.approx(10.0)
    # a wide stop: 100 / 20 = 5 units < cap; the multiplier scales it
    d = risk_check(ghost_id=1, entry=100.0, stop=80.0, size_mult=0.5, state=STATE, limits=lim)
    assert d.quantity == pytest.approx(2.5)


@pytest.mark.parametrize(("state", "limit"), [
    (dict(kill_switch=True), "kill_switch"),
    (dict(open_positions=3), "max_open_positions"),
    (dict(open_by_ghost={1: 1}, open_positions=1), "max_open_per_ghost"),
    (dict(trades_today=50), "max_trades_per_day"),
    (dict(equity=9_700.0), "max_daily_loss"),
])
def test_each_limit_refuses_with_its_name(state, limit) -> None:
    s = RiskState(**{**STATE.__dict__, **state})
    d = risk_check(ghost_id=1, entry=100.0, stop=99.0, size_mult=1.0, state=s, limits=RiskLimits())
    assert not d.ok and d.limit == limit and d.detail


def test_daily_loss_is_measured_against_start_of_day_equity() -> None:
    lim = RiskLimits(max_daily_loss_pct=3.0)
    assert not daily_loss_breached(RiskState(**{**STATE.__dict__, "equity": 9_701.0}), lim)
    assert daily_loss_breached(RiskState(**{**STATE.__dict__, "equity": 9_700.0}), lim)


def test_ghost_drawdown_stop() -> None:
    lim = RiskLimits(ghost_drawdown_stop_pct=5.0)
    assert ghost_drawdown_breached([0, 300, -150], 10_000, lim) is None  # 450 < 500
    assert "ghost drawdown 500.00" in ghost_drawdown_breached([0, 300, -200], 10_000, lim)


def test_limits_validation() -> None:
    with pytest.raises(ConfigError, match="risk.risk_per_trade_pct"):
        RiskLimits.from_params({"risk_per_trade_pct": 0})
    with pytest.raises(ConfigError, match="unknown risk parameter"):
        RiskLimits.from_params({"max_leverage": 5})


def test_best_score_is_taken_and_the_rest_outscored() -> None:
    cands = [Candidate(1, "a", draft(1, 0.6)), Candidate(2, "b", draft(1, 0.9)), Candidate(3, "c", draft(-1, 0.2))]
    out = arbitrate(cands, now_s=NOW, trend=TrendGate(), risk=ok_risk)
    fates = {d.ghost_id: d.fate for d in out}
    assert fates == {1: OUTSCORED, 2: TAKEN, 3: OUTSCORED}
    assert "of b" in out[0].detail and [d.ghost_id for d in out] == [1, 2, 3]
    cfg = ManagerConfig()
    assert out[1].score == pytest.approx(0.5 * 0.9 + 0.2 * 0.2 + 0.3 * 0.5) == pytest.approx(score(cands[1], cfg))


def test_disabled_stale_and_trend_blocked_never_trade() -> None:
    cands = [Candidate(1, "off", draft(1, 0.9), enabled=False), Candidate(2, "long", draft(1, 0.8)),
             Candidate(3, "short", draft(-1, 0.3))]
    out = arbitrate(cands, now_s=NOW, trend=TrendGate(allow_long=False, label="strong down"), risk=ok_risk)
    assert [d.fate for d in out] == [GHOST_DISABLED, BLOCKED_TREND, TAKEN]
    assert "strong down" in out[1].detail
    late = arbitrate(cands[1:2], now_s=NOW + 600, trend=TrendGate(), risk=ok_risk)
    assert late[0].fate == STALE


def test_strong_disagreement_takes_none() -> None:
    cands = [Candidate(1, "bull", draft(1, 0.9)), Candidate(2, "bear", draft(-1, 0.85)),
             Candidate(3, "meh", draft(1, 0.1))]
    out = arbitrate(cands, now_s=NOW, trend=TrendGate(), risk=ok_risk)
    assert {d.fate for d in out} == {CONFLICT} and "bear" in out[0].detail
    # far apart: the stronger side wins
    cands[1] = Candidate(2, "bear", draft(-1, 0.3))
    assert arbitrate(cands, now_s=NOW, trend=TrendGate(), risk=ok_risk)[0].fate == TAKEN


def test_risk_refusal_passes_to_the_next_and_sizes_with_trend_and_confidence() -> None:
    def risk(c: Candidate, mult: float) -> RiskDecision:
        if c.ghost_id == 2:
            return RiskDecision(False, limit="max_open_per_ghost", detail="holds one")
        return RiskDecision(True, quantity=mult)

    cands = [Candidate(1, "a", draft(-1, 0.6, size_mult=0.8)), Candidate(2, "b", draft(-1, 0.9))]
    out = arbitrate(cands, now_s=NOW, trend=TrendGate(size_mult_short=0.5), risk=risk)
    assert out[1].fate == BLOCKED_RISK and "max_open_per_ghost" in out[1].detail
    assert out[0].fate == TAKEN and out[0].quantity == pytest.approx(0.4) and out[0].size_mult == pytest.approx(0.4)


def test_ties_are_deterministic_and_performance_counts() -> None:
    a, b = Candidate(7, "a", draft(1, 0.5)), Candidate(3, "b", draft(1, 0.5))
    assert [d.fate for d in arbitrate([a, b], now_s=NOW, trend=TrendGate(), risk=ok_risk)] == [OUTSCORED, TAKEN]
    a = Candidate(7, "a", draft(1, 0.5), performance_score=0.9)
    assert arbitrate([a, b], now_s=NOW, trend=TrendGate(), risk=ok_risk)[0].fate == TAKEN
    assert math.isclose(score(Candidate(1, "x", draft(1, 0.5), performance_score=math.nan), ManagerConfig()),
                        0.5 * 0.5 + 0.2 * 0.2 + 0.3 * 0.5)
    with pytest.raises(ConfigError, match="add up to 1"):
        ManagerConfig(w_confidence=0.9)
