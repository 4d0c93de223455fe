"""DESIGN §4 fill rules, one small synthetic-candle test each, plus the fee/slippage model.

Bars are written out by hand: (open, high, low, close) per minute. A signal on bar 0 enters on bar 1.
"""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from apps.engine.exits import (
    END_OF_DATA,
    STOP,
    TARGET,
    TIME,
    bar_check,
    bar_exit,
    due,
    rebase_levels,
    simulate_trade,
    tick_check,
    tick_exit,
)
from apps.engine.fills import FILL_MODELS, FillModel, fill_model_for
from apps.engine.sizing import position_size, quantity_at_fill
from apps.engine.types import ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

FM = FillModel()  # 0.1 % taker/maker, 5 bps slippage
NO_SLIP = FillModel(slippage_bps=0.0)


def candles(*ohlc: tuple[float, float, float, float]) -> pd.DataFrame:
    idx = pd.date_range("2025-01-01", periods=len(ohlc), freq="1min", tz="UTC")
    return pd.DataFrame(ohlc, columns=["open", "high", "low", "close"], index=idx)


# -- rule: a signal on bar t enters at the open of t+1 plus slippage; levels set from that fill ------------

def test_entry_at_next_open_plus_slippage_and_levels_rebased() -> None:
    bars = candles((100, 100.5, 99.5, 100), (101, 101.2, 100.8, 101), (101, 101.1, 100.9, 101))
    o = simulate_trade(bars, 0, side=1, entry_ref=100.0, stop=99.0, target=102.0, max_hold_s=3600,
                       fill_model=FM)
    assert o.entry_time == bars.index[1]
    assert o.entry_price == pytest.approx(101 * 1.0005)  # a long pays up
    k = o.entry_price / 100.0
    assert (o.stop, o.target) == pytest.approx((99.0 * k, 102.0 * k))  # same % distances from the fill
    short = simulate_trade(bars, 0, side=-1, entry_ref=100.0, stop=101.0, target=98.0, max_hold_s=3600,
                           fill_model=FM)
    assert short.entry_price == pytest.approx(101 * 0.9995)  # a short sells down
    assert simulate_trade(bars, 2, 1, 100.0, 99.0, 102.0, 3600, FM) is None  # no bar to enter on


def test_fill_price_is_adverse_for_the_order_side() -> None:
    assert FM.fill_price(1, 100.0) == pytest.approx(100.05)
    assert FM.fill_price(-1, 100.0) == pytest.approx(99.95)
    # exits pass the CLOSING side: closing a long sells (-1), closing a short buys (+1)
    assert FM.exit_fill(1, 100.0, STOP) == pytest.approx(99.95)
    assert FM.exit_fill(-1, 100.0, TIME) == pytest.approx(100.05)
    assert FM.exit_fill(1, 100.0, TARGET) == 100.0  # resting limit fills at its price
    with pytest.raises(ValueError):
        FM.fill_price(0, 100.0)
    with pytest.raises(ValueError):
        FM.fill_price(1, float("nan"))


# -- rule: a bar whose range holds both the stop and the target exits at the stop -------------------------

def test_both_levels_in_one_bar_exit_at_stop() -> None:
    assert bar_exit(1, stop=99.0, target=102.0, open=100.0, high=102.5, low=98.5) == (99.0, STOP)
    assert bar_exit(-1, stop=101.0, target=98.0, open=100.0, high=101.5, low=97.5) == (101.0, STOP)
    bars = candles((100, 100, 100, 100), (100, 100, 100, 100), (100, 103, 97, 100))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, 3600, NO_SLIP)
    assert (o.reason, o.exit_price, o.exit_time) == (STOP, 99.0, bars.index[2])


# -- rule: a bar that opens beyond the stop (a gap) exits at that open -------------------------------------

def test_gap_through_stop_exits_at_open() -> None:
    assert bar_exit(1, stop=99.0, target=102.0, open=97.0, high=97.5, low=96.0) == (97.0, STOP)
    assert bar_exit(-1, stop=101.0, target=98.0, open=103.0, high=104.0, low=102.5) == (103.0, STOP)
    bars = candles((100, 100, 100, 100), (100, 100.2, 99.8, 100), (97, 97.5, 96, 97))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, 3600, FM)
    assert o.reason == STOP and o.exit_price == pytest.approx(97 * 0.9995)  # the open, minus slippage


def test_gap_through_target_fills_at_the_open() -> None:
    # a resting limit gapped through is filled by the first trade of the bar: at the open, the better price
    assert bar_exit(1, stop=99.0, target=102.0, open=103.0, high=103.5, low=102.8) == (103.0, TARGET)
    assert bar_exit(-1, stop=101.0, target=98.0, open=97.2, high=97.9, low=96.5) == (97.2, TARGET)
    # an open exactly at the target is at the target either way
    assert bar_exit(1, stop=99.0, target=102.0, open=102.0, high=102.5, low=101.0) == (102.0, TARGET)
    bars = candles((100, 100, 100, 100), (100, 100.2, 99.8, 100.1), (103, 103.5, 102.8, 103.2))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, 3600, FM)
    # a limit order: no slippage on the exit, even at the gapped open
    assert (o.reason, o.exit_time, o.exit_price) == (TARGET, bars.index[2], 103.0)
    # on prints there is no gap: the trade that first crossed the target filled the limit at its price
    assert tick_exit(1, 99.0, 102.0, 103.0) == (102.0, TARGET)


# -- rule: a high exactly equal to the target exits at the target -----------------------------------------

def test_high_exactly_at_target_exits_at_target() -> None:
    assert bar_exit(1, stop=99.0, target=102.0, open=100.0, high=102.0, low=99.5) == (102.0, TARGET)
    assert bar_exit(-1, stop=101.0, target=98.0, open=100.0, high=100.5, low=98.0) == (98.0, TARGET)
    assert bar_exit(1, stop=99.0, target=102.0, open=100.0, high=101.99, low=99.01) is None
    bars = candles((100, 100, 100, 100), (100, 100.5, 99.5, 100), (100, 102, 99.5, 101))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, 3600, NO_SLIP)
    assert (o.reason, o.exit_price) == (TARGET, 102.0)


# -- rule: a trade still open at the end of the data closes at the last close, marked as such --------------

def test_open_at_end_of_data_closes_at_last_close() -> None:
    bars = candles((100, 100, 100, 100), (100, 100.5, 99.5, 100.2), (100.2, 100.6, 99.8, 100.4))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, 3600, FM)
    assert o.reason == END_OF_DATA and o.exit_price == 100.4 and o.exit_time == bars.index[-1]


# -- rule: fees on entry and on exit, on the filled notional ----------------------------------------------

def test_fees_on_entry_and_exit_on_filled_notional() -> None:
    bars = candles((100, 100, 100, 100), (100, 100.5, 99.5, 100), (100, 102.5, 99.5, 101))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, 3600, FM, qty=2.0)
    assert o.entry_fee == pytest.approx(2.0 * o.entry_price * 0.001)
    assert o.exit_fee == pytest.approx(2.0 * o.exit_price * 0.001)
    assert o.gross_pnl == pytest.approx(2.0 * (o.exit_price - o.entry_price))
    assert o.net_pnl == pytest.approx(o.gross_pnl - o.entry_fee - o.exit_fee)
    # the prototype's headline left out the entry fee; here a flat round trip loses both fees
    flat = candles((100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 100, 100))
    f = simulate_trade(flat, 0, 1, 100.0, 99.0, 102.0, 3600, NO_SLIP, qty=1.0)
    assert f.net_pnl == pytest.approx(-0.2)
    assert FM.fee(-5000.0) == pytest.approx(5.0) and FM.fee(5000.0, maker=True) == pytest.approx(5.0)


# -- time stop: data time, at the open of the first bar where it is due -----------------------------------

def test_time_exit_uses_data_time() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    assert not due(t0, 3600, t0 + timedelta(seconds=3599))
    assert due(t0, 3600, t0 + timedelta(seconds=3600))
    assert not due(t0, None, t0 + timedelta(days=9)) and not due(t0, float("nan"), t0 + timedelta(days=9))
    rows = [(100, 100, 100, 100)] + [(100 + i * 0.01, 100.5, 99.5, 100) for i in range(1, 6)]
    bars = candles(*rows)
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, max_hold_s=180, fill_model=NO_SLIP)
    assert o.reason == TIME and o.exit_time == bars.index[4] and o.exit_price == bars["open"].iloc[4]


# -- time stop: fires at the OPEN of the bar it is due on, before any level ---------------------------------

def test_time_stop_due_fires_at_the_open_before_the_levels() -> None:
    # due: the open wins whatever it is, inside the levels, beyond the stop or beyond the target
    assert bar_check(1, 99.0, 102.0, open=100.3, high=103.0, low=98.0, time_due=True) == (100.3, TIME)
    assert bar_check(1, 99.0, 102.0, open=98.0, high=98.5, low=97.0, time_due=True) == (98.0, TIME)
    assert bar_check(-1, 101.0, 98.0, open=97.0, high=97.5, low=96.0, time_due=True) == (97.0, TIME)
    # not due: the level rules of bar_exit
    assert bar_check(1, 99.0, 102.0, open=98.0, high=98.5, low=97.0, time_due=False) == (98.0, STOP)
    assert bar_check(1, 99.0, 102.0, open=100.0, high=100.5, low=99.5, time_due=False) is None
    # over bars: max hold 180 s, entry at bar 1 (10:01); bar 4 (10:04) is due and opens beyond the target
    bars = candles((100, 100, 100, 100), (100, 100.5, 99.5, 100), (100, 100.5, 99.5, 100),
                   (100, 100.5, 99.5, 100), (103, 103.5, 97, 103), (103, 103, 103, 103))
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, max_hold_s=180, fill_model=FM)
    assert (o.reason, o.exit_time) == (TIME, bars.index[4])
    assert o.exit_price == pytest.approx(103 * 0.9995)  # a market sell at the open, with slippage
    # the same bar one minute earlier than due (max hold 240 s): the gap exits as a target, at the open
    o = simulate_trade(bars, 0, 1, 100.0, 99.0, 102.0, max_hold_s=240, fill_model=FM)
    assert (o.reason, o.exit_time, o.exit_price) == (TARGET, bars.index[4], 103.0)


def test_time_stop_on_prints_wins_at_that_price() -> None:
    assert tick_check(1, 99.0, 102.0, 98.0, time_due=True) == (98.0, TIME)  # below the stop, but due
    assert tick_check(-1, 101.0, 98.0, 97.0, time_due=True) == (97.0, TIME)
    assert tick_check(1, 99.0, 102.0, 98.0, time_due=False) == (98.0, STOP)
    assert tick_check(1, 99.0, 102.0, 100.0, time_due=False) is None
    with pytest.raises(ValueError):
        tick_check(0, 99.0, 102.0, 100.0, time_due=True)


# -- quantity: sized from the FILL price (the decision's notional is kept) -------------------------------

def test_quantity_at_fill_keeps_the_decided_notional() -> None:
    # decided 10 BTC at the 100 close = 1,000 notional; the buy fills at 100.5 * 1.0005 -> 1,000 / that
    fill = FM.entry_fill(1, 100.5)
    q = quantity_at_fill(10.0, 100.0, fill)
    assert q * fill == pytest.approx(1000.0, abs=1e-9) and q < 10.0
    # risk sizing at the fill with the stop re-anchored there equals the decision re-expressed at the fill
    stop_f, _ = rebase_levels(100.0, 99.0, 102.0, fill)
    assert position_size(10_000, fill, stop_f, max_notional_pct=1.0) == pytest.approx(
        quantity_at_fill(position_size(10_000, 100.0, 99.0, max_notional_pct=1.0), 100.0, fill), rel=1e-12)
    assert quantity_at_fill(10.0, 100.0, float("nan")) == 0.0 and quantity_at_fill(10.0, 0.0, 100.0) == 0.0


# -- ticks (paper/live): checked on every trade print -----------------------------------------------------

def test_tick_exit_stop_at_trade_price_target_at_target() -> None:
    assert tick_exit(1, 99.0, 102.0, 100.0) is None
    assert tick_exit(1, 99.0, 102.0, 99.0) == (99.0, STOP)
    assert tick_exit(1, 99.0, 102.0, 98.2) == (98.2, STOP)   # through the stop: that trade's price
    assert tick_exit(1, 99.0, 102.0, 102.0) == (102.0, TARGET)
    assert tick_exit(1, 99.0, 102.0, 102.7) == (102.0, TARGET)
    assert tick_exit(-1, 101.0, 98.0, 101.3) == (101.3, STOP)
    assert tick_exit(-1, 101.0, 98.0, 98.0) == (98.0, TARGET)
    assert tick_exit(1, None, None, 50.0) is None  # no levels, no exit
    with pytest.raises(ValueError):
        tick_exit(0, 99.0, 102.0, 100.0)


def test_rebase_levels_keeps_percent_distance() -> None:
    stop, target = rebase_levels(100.0, 99.4, 100.8, 101.0)
    assert stop / 101.0 == pytest.approx(0.994) and target / 101.0 == pytest.approx(1.008)


# -- per-exchange fee models -------------------------------------------------------------------------------

def test_fill_models_per_exchange() -> None:
    assert fill_model_for("binance") == FillModel(0.001, 0.001, 5.0)
    assert (FILL_MODELS["binanceusdm"].taker_fee, FILL_MODELS["binanceusdm"].maker_fee) == (0.0005, 0.0002)
    assert (FILL_MODELS["okx"].taker_fee, FILL_MODELS["okx"].maker_fee) == (0.001, 0.0008)
    assert (FILL_MODELS["kraken"].taker_fee, FILL_MODELS["kraken"].maker_fee) == (0.004, 0.0025)
    assert (FILL_MODELS["bybit"].taker_fee, FILL_MODELS["bybit"].maker_fee) == (0.001, 0.001)
    assert fill_model_for("KRAKEN") is FILL_MODELS["kraken"]
    assert fill_model_for("nowhere") is FILL_MODELS["binance"]
    assert fill_model_for(None) is FILL_MODELS["binance"]


@pytest.mark.parametrize("kwargs", [{"taker_fee": -0.001}, {"taker_fee": 0.2}, {"slippage_bps": -1},
                                    {"slippage_bps": float("nan")}])
def test_fill_model_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="fill_model"):
        FillModel(**kwargs)
