"""Risk across instruments (issue 11), the pure rules: total and per-instrument notional caps, the open-positions
cap counted over instruments, the account currency. Each test fails when its rule is skipped."""

import dataclasses

import pytest

from apps.engine.risk import Market, RiskLimits, RiskState, quote_rate, risk_check
from apps.engine.types import ConfigError

STATE = RiskState(equity=10_000.0, day_start_equity=10_000.0, open_positions=0, open_by_ghost={},
                  trades_today=0, kill_switch=False)
ETH = Market(instrument_id=2, label="ETH/USDT on binance", quote="USDT", account="USDT")


def check(state: RiskState = STATE, limits: RiskLimits | None = None, market: Market | None = ETH, ghost: int = 9):
    # 1 % risk over a 10 % stop: 10 % of equity by risk, the 10 % notional cap binds at the same 1,000 USDT
    return risk_check(ghost_id=ghost, entry=100.0, stop=90.0, size_mult=1.0, state=state,
                      limits=limits or RiskLimits(), market=market)


def test_caps_are_off_by_default_and_validated() -> None:
    assert check().ok and check().quantity == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="max_total_notional_pct"):
        RiskLimits(max_total_notional_pct=-1)
    with pytest.raises(ConfigError, match="max_instrument_notional_pct"):
        RiskLimits.from_params({"max_instrument_notional_pct": 5000})
    assert RiskLimits.from_params(RiskLimits(max_total_notional_pct=25).to_params()).max_total_notional_pct == 25


def test_total_notional_counts_every_instrument() -> None:
    state = dataclasses.replace(STATE, open_positions=2, open_by_ghost={1: 1, 2: 1}, open_notional=2_000.0,
                                open_notional_by_instrument={1: 1_000.0, 3: 1_000.0}, open_instruments=2)
    limits = RiskLimits(max_total_notional_pct=25.0)  # 2,500: the new 1,000 takes it to 3,000
    d = check(state, limits)
    assert not d.ok and d.limit == "max_total_notional"
    assert d.detail == ("open notional 2000.00 + this 1000.00 = 3000.00 USDT over every instrument > limit 25% "
                        "of equity (2500.00)")
    assert check(state, RiskLimits(max_total_notional_pct=30.0)).ok  # exactly at the cap fits


def test_instrument_cap_reads_that_instrument_only() -> None:
    state = dataclasses.replace(STATE, open_positions=2, open_by_ghost={1: 1, 2: 1}, open_notional=1_500.0,
                                open_notional_by_instrument={1: 1_000.0, 2: 500.0}, open_instruments=2)
    limits = RiskLimits(max_instrument_notional_pct=12.0)  # 1,200 per instrument
    d = check(state, limits)  # ETH (id 2) holds 500: 1,500 > 1,200
    assert not d.ok and d.limit == "max_instrument_notional"
    assert "on ETH/USDT on binance 500.00 + this 1000.00 = 1500.00 USDT > limit 12% of equity (1200.00)" in d.detail
    other = Market(instrument_id=5, label="SOL/USDT on binance", quote="USDT")
    assert check(state, limits, market=other).ok  # nothing open on SOL


def test_open_positions_cap_counts_across_instruments() -> None:
    state = dataclasses.replace(STATE, open_positions=3, open_by_ghost={1: 1, 2: 1, 3: 1}, open_instruments=2)
    d = check(state)
    assert not d.ok and d.limit == "max_open_positions"
    assert d.detail == "3 positions open on 2 instrument(s) >= limit 3"


def test_account_currency() -> None:
    assert quote_rate("USDT", "USDT") == 1.0 and quote_rate("USD", "USDT") == 1.0 and quote_rate("usdc", "USD") == 1.0
    assert quote_rate("BTC", "USDT") is None and quote_rate("EUR", "USDT") is None
    d = check(market=Market(instrument_id=7, label="ETH/BTC on binance", quote="BTC"))
    assert not d.ok and d.limit == "currency"
    assert d.detail == "ETH/BTC on binance is quoted in BTC; P&L is kept in USDT and BTC is not converted: not traded"
    # the kill switch is named first: it is the reason nothing trades at all
    tripped = dataclasses.replace(STATE, kill_switch=True)
    assert check(tripped, market=Market(instrument_id=7, label="x", quote="BTC")).limit == "kill_switch"


def test_backtest_without_market_reads_the_total() -> None:
    state = dataclasses.replace(STATE, open_notional=900.0)
    d = check(state, RiskLimits(max_instrument_notional_pct=15.0), market=None)
    assert not d.ok and d.limit == "max_instrument_notional" and "USDT" not in d.detail
