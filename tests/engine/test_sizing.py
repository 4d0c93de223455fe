"""position_size: risk / stop distance, capped by notional, 0 for anything invalid."""

import math

import pytest

from apps.engine.sizing import position_size
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401


def test_risk_based_size_when_cap_does_not_bind() -> None:
    # risk 1 % of 10,000 = 100 over a 5,000 stop distance = 0.02 BTC = 2,000 notional (cap 50 % -> 5,000)
    q = position_size(10_000, 100_000, 95_000, risk_pct=0.01, max_notional_pct=0.5)
    assert q == pytest.approx(0.02)
    assert position_size(10_000, 100_000, 105_000, max_notional_pct=0.5) == pytest.approx(0.02)  # a short


def test_notional_cap_binds_for_tight_stops() -> None:
    # 0.6 % stop: risk sizing wants 1.67x equity; the 10 % cap gives 1,000 / 100,000 = 0.01
    assert position_size(10_000, 100_000, 99_400) == pytest.approx(0.01)


def test_size_mult_scales_risk_but_not_the_cap() -> None:
    base = position_size(10_000, 100_000, 95_000, max_notional_pct=0.5)
    half = position_size(10_000, 100_000, 95_000, max_notional_pct=0.5, size_mult=0.5)
    assert half == pytest.approx(base / 2)
    assert position_size(10_000, 100_000, 99_400, size_mult=1.5) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "args",
    [
        (10_000, 100_000, 100_000),          # zero stop distance
        (0, 100_000, 99_000),                # no equity
        (-5, 100_000, 99_000),
        (10_000, math.nan, 99_000),
        (10_000, 100_000, math.inf),
        (10_000, 100_000, 0),
        (10_000, 100_000, 99_000, -0.01),    # negative risk
        (10_000, 100_000, 99_000, 0.01, 0.1, 0.0),
        (10_000, None, 99_000),
    ],
)
def test_invalid_inputs_give_zero(args: tuple) -> None:
    assert position_size(*args) == 0.0
