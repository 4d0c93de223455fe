"""BarBuilder: trades -> closed 1-minute bars with taker split, whale prints and liquidations."""

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from apps.engine.bars import bars_from_records
from apps.engine.types import BAR_COLUMNS
from apps.market.bar_builder import BarBuilder, Liquidation, Trade
from tests.datafiles import _flush_redis, require, services_use_test_redis  # noqa: F401

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
M = 60_000


def tr(ts: int, price: float, amount: float, side: str = "buy", id: str = "") -> Trade:
    return Trade(ts_ms=ts, price=price, amount=amount, side=side, id=id)


def test_bar_closed_by_a_later_trade() -> None:
    b = BarBuilder(whale_notional=100_000.0, grace_ms=0)
    assert b.add_trade(tr(T0 + 1_000, 100_000.0, 0.5, "buy", "1")) == []
    assert b.add_trade(tr(T0 + 20_000, 100_100.0, 2.0, "sell", "2")) == []   # whale: 200,200 notional
    assert b.add_trade(tr(T0 + 40_000, 99_900.0, 1.0, "buy", "3")) == []     # exactly 99,900: not whale
    assert b.add_trade(tr(T0 + 59_999, 100_050.0, 1.0, "buy", "4")) == []    # 100,050: whale
    closed = b.add_trade(tr(T0 + M, 100_000.0, 0.1, "buy", "5"))
    assert len(closed) == 1
    bar = closed[0]
    assert set(bar) == {"open_time", *BAR_COLUMNS}
    assert bar["open_time"] == datetime(2025, 1, 1, tzinfo=UTC) and bar["open_time"].tzinfo is not None
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (100_000.0, 100_100.0, 99_900.0, 100_050.0)
    assert bar["volume"] == pytest.approx(4.5) and bar["trades"] == 4
    assert bar["taker_buy_volume"] == pytest.approx(2.5) and bar["taker_sell_volume"] == pytest.approx(2.0)
    assert bar["whale_buy_volume"] == pytest.approx(1.0) and bar["whale_sell_volume"] == pytest.approx(2.0)
    assert math.isnan(bar["liq_long_volume"]) and math.isnan(bar["liq_short_volume"])  # no liquidation feed


def test_whale_threshold_is_inclusive() -> None:
    b = BarBuilder(whale_notional=1_000.0, grace_ms=0)
    b.add_trade(tr(T0, 100.0, 10.0, "buy"))
    bar = b.flush(T0 + M)[0]
    assert bar["whale_buy_volume"] == 10.0


def test_quiet_minutes_produce_no_bar_and_flush_closes_by_clock() -> None:
    b = BarBuilder(grace_ms=0)
    b.add_trade(tr(T0 + 5_000, 100.0, 1.0))
    assert b.flush(T0 + 59_999) == []            # the minute is not over yet
    closed = b.flush(T0 + M)                      # now it is: a quiet market still gets its bar
    assert [x["open_time"] for x in closed] == [datetime(2025, 1, 1, tzinfo=UTC)]
    assert b.flush(T0 + 2 * M) == []              # nothing in progress: no invented bars
    closed = b.add_trade(tr(T0 + 3 * M + 1, 101.0, 1.0))
    assert closed == []                           # minutes 1 and 2 had no trades: no bars for them
    assert b.snapshot()["open_time"] == datetime(2025, 1, 1, 0, 3, tzinfo=UTC)


def test_late_trades_are_counted_and_ignored() -> None:
    b = BarBuilder(grace_ms=0)
    b.add_trade(tr(T0 + M + 1, 100.0, 1.0))
    assert b.add_trade(tr(T0 + 30_000, 90.0, 5.0)) == []  # belongs to a minute already passed
    assert b.late_trades == 1
    bar = b.flush(T0 + 2 * M)[0]
    assert bar["volume"] == 1.0 and bar["low"] == 100.0


def test_bad_and_duplicate_trades() -> None:
    b = BarBuilder(grace_ms=0)
    b.add_trade(tr(T0, 100.0, 1.0, "buy", "a"))
    b.add_trade(tr(T0 + 1, 100.0, 1.0, "buy", "a"))          # same id again (REST/websocket overlap)
    b.add_trade(tr(T0 + 2, float("nan"), 1.0, "buy", "b"))
    b.add_trade(tr(T0 + 3, 100.0, -1.0, "sell", "c"))
    b.add_trade(tr(T0 + 4, 100.0, 1.0, "hold", "d"))
    assert b.duplicates == 1
    assert b.rejected == {"bad_price": 1, "bad_amount": 1, "bad_side": 1}
    assert b.flush(T0 + M)[0]["volume"] == 1.0


def test_liquidations_per_side_with_a_feed() -> None:
    b = BarBuilder(has_liquidations=True, grace_ms=0)
    b.add_trade(tr(T0, 100.0, 1.0))
    b.add_liquidation(Liquidation(ts_ms=T0 + 10, side="long", price=99.0, amount=0.3))
    b.add_liquidation(Liquidation(ts_ms=T0 + 20, side="long", price=99.0, amount=0.2))
    b.add_liquidation(Liquidation(ts_ms=T0 + M + 5, side="short", price=101.0, amount=0.7))  # next minute
    bar0 = b.add_trade(tr(T0 + M + 10, 101.0, 1.0))[0]
    assert bar0["liq_long_volume"] == pytest.approx(0.5) and bar0["liq_short_volume"] == 0.0
    b.add_liquidation(Liquidation(ts_ms=T0 + 30, side="short", price=99.0, amount=9.0))  # too late
    bar1 = b.flush(T0 + 2 * M)[0]
    assert bar1["liq_short_volume"] == pytest.approx(0.7) and bar1["liq_long_volume"] == 0.0
    assert b.late_liquidations == 1
    # a liquidation in a minute that never gets a trade has no bar to go to
    b.add_liquidation(Liquidation(ts_ms=T0 + 5 * M, side="long", price=99.0, amount=1.0))
    b.add_trade(tr(T0 + 7 * M, 100.0, 1.0))
    assert b.orphan_liquidations == 1


def test_builder_output_is_valid_engine_input() -> None:
    b = BarBuilder(has_liquidations=True, grace_ms=0)
    bars = []
    for i in range(5):
        bars += b.add_trade(tr(T0 + i * M + 7, 100.0 + i, 1.0 + i, "buy" if i % 2 else "sell"))
    bars += b.flush(T0 + 5 * M)
    df = bars_from_records(bars)
    assert len(df) == 5 and df["trades"].tolist() == [1.0] * 5 and (df["liq_long_volume"] == 0).all()


def test_real_trades_aggregate_like_pandas() -> None:
    """1,000 consecutive real trades (ccxt format, freqtrade test data) give the same bars as a groupby."""
    raw = pd.read_csv(require("trades/freqtrade_orderflow_public_trades_list_2023-02-02.csv"))
    b = BarBuilder(whale_notional=50_000.0)
    bars = []
    for row in raw.itertuples(index=False):
        trade = Trade(int(row.timestamp), float(row.price), float(row.amount), row.side, str(row.id))
        bars += b.add_trade(trade)
    bars += b.flush(int(raw.timestamp.max()) + 2 * M)
    got = pd.DataFrame(bars).set_index("open_time")
    raw["minute"] = pd.to_datetime(raw.timestamp // M * M, unit="ms", utc=True)
    g = raw.groupby("minute")
    assert list(got.index) == list(g.size().index)
    assert got["open"].tolist() == g.price.first().tolist()
    assert got["close"].tolist() == g.price.last().tolist()
    assert got["high"].tolist() == g.price.max().tolist() and got["low"].tolist() == g.price.min().tolist()
    assert got["trades"].tolist() == g.size().tolist()
    assert got["volume"].to_numpy() == pytest.approx(g.amount.sum().to_numpy(), rel=1e-12)
    buys = raw[raw.side == "buy"].groupby("minute").amount.sum()
    expected_buys = buys.reindex(got.index, fill_value=0).to_numpy()
    assert got["taker_buy_volume"].to_numpy() == pytest.approx(expected_buys)
    whales = raw[(raw.price * raw.amount >= 50_000.0) & (raw.side == "sell")].groupby("minute").amount.sum()
    expected = whales.reindex(got.index, fill_value=0).to_numpy()
    assert expected.sum() > 0 and got["whale_sell_volume"].to_numpy() == pytest.approx(expected)
    assert b.late_trades == 0 and b.duplicates == 0


# -- grace period -------------------------------------------------------------------------------------------
def test_a_trade_within_the_grace_amends_its_bar() -> None:
    b = BarBuilder(grace_ms=2_000)
    b.add_trade(tr(T0 + 10_000, 100.0, 1.0, "buy", "1"))
    b.add_trade(tr(T0 + 50_000, 101.0, 1.0, "buy", "2"))
    assert b.add_trade(tr(T0 + M + 500, 105.0, 1.0, "buy", "3")) == []   # next minute, but within the grace
    # a straggler of minute 0 (ts before both others) arrives after a trade of minute 1: it still counts,
    # and as the earliest trade it is the bar's open; the close stays the newest trade of the minute
    assert b.add_trade(tr(T0 + 5_000, 99.0, 2.0, "sell", "4")) == []
    assert b.add_trade(tr(T0 + 59_999, 102.0, 1.0, "sell", "5")) == []   # the newest: it is the close
    closed = b.add_trade(tr(T0 + M + 2_000, 106.0, 1.0, "buy", "6"))     # clock reaches minute + 60 s + grace
    assert len(closed) == 1
    bar = closed[0]
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (99.0, 102.0, 99.0, 102.0)
    assert bar["trades"] == 4 and bar["volume"] == 5.0 and bar["taker_sell_volume"] == 3.0
    assert b.late_trades == 0
    assert b.snapshot()["trades"] == 2 and b.snapshot()["open"] == 105.0


def test_a_trade_after_the_grace_is_late_counted_and_logged(caplog) -> None:
    b = BarBuilder(grace_ms=2_000)
    b.add_trade(tr(T0 + 10_000, 100.0, 1.0))
    assert b.add_trade(tr(T0 + M + 2_001, 101.0, 1.0))[0]["volume"] == 1.0
    with caplog.at_level("INFO", logger="apps.market.bar_builder"):
        assert b.add_trade(tr(T0 + 59_000, 50.0, 9.0)) == []
    assert b.late_trades == 1 and "late trade" in caplog.text
    assert b.flush(T0 + 3 * M)[0]["low"] == 101.0   # the late trade reached no bar


def test_flush_respects_the_grace_and_never_moves_the_clock_back() -> None:
    b = BarBuilder(grace_ms=2_000)
    b.add_trade(tr(T0 + 1_000, 100.0, 1.0))
    assert b.flush(T0 + M + 1_999) == []
    assert b.flush(T0 + 5_000) == [] and b.clock_ms == T0 + M + 1_999
    assert len(b.flush(T0 + M + 2_000)) == 1


def test_bars_come_out_in_time_order_when_a_graced_minute_opens_late() -> None:
    b = BarBuilder(grace_ms=5_000)
    b.add_trade(tr(T0 + M + 1_000, 101.0, 1.0))        # minute 1 first
    b.add_trade(tr(T0 + 59_000, 100.0, 1.0))           # minute 0 still within its grace (clock T0+61 s)
    bars = b.flush(T0 + 3 * M)
    assert [x["open_time"].minute for x in bars] == [0, 1]


def test_grace_must_be_sane() -> None:
    for bad in (-1, 60_000, 1.5):
        with pytest.raises(ValueError):
            BarBuilder(grace_ms=bad)


# -- whale rule ---------------------------------------------------------------------------------------------
def test_rolling_median_matches_numpy() -> None:
    from apps.market.bar_builder import RollingMedian

    rng = np.random.default_rng(7)
    xs = rng.lognormal(0, 1.5, 3_000)
    m = RollingMedian(101)
    for i, x in enumerate(xs):
        m.add(float(x))
        if i % 97 == 0 or i > 2_990:
            assert m.median() == float(np.median(xs[max(0, i - 100): i + 1]))
    m2 = RollingMedian(4)
    for x in (1.0, 2.0, 3.0, 10.0):
        m2.add(x)
    assert m2.median() == 2.5 and len(m2) == 4


def test_whale_needs_notional_and_multiple_of_the_rolling_median() -> None:
    b = BarBuilder(whale_notional=1_000.0, whale_median_multiple=5.0, whale_median_window=10,
                   whale_median_min_trades=5, grace_ms=0)
    b.add_trade(tr(T0, 100.0, 50.0, "buy"))            # warm-up: notional alone decides -> whale
    for i in range(9):
        b.add_trade(tr(T0 + 1 + i, 100.0, 20.0, "buy"))  # 2,000 notional each, median 20 after warm-up
    # 20 * 5 = 100 needed: 60 has the notional (6,000) but is only 3x the median -> not a whale
    b.add_trade(tr(T0 + 20, 100.0, 60.0, "sell"))
    b.add_trade(tr(T0 + 21, 100.0, 100.0, "sell"))     # exactly 5x the median: whale (inclusive)
    b.add_trade(tr(T0 + 22, 1.0, 500.0, "buy"))        # 25x the median but notional 500 < 1,000: not a whale
    bar = b.flush(T0 + M)[0]
    assert bar["whale_sell_volume"] == 100.0
    # warm-up whale (50), the 20s: 2,000 notional but 20 < 5 x median once 5 trades are in the window;
    # the first 4 twenties were judged in warm-up (notional alone) -> whales too
    assert bar["whale_buy_volume"] == 50.0 + 4 * 20.0


def test_whale_median_multiple_off_is_the_notional_rule() -> None:
    with pytest.raises(ValueError):
        BarBuilder(whale_median_multiple=-1.0)
    b = BarBuilder(whale_notional=1_000.0, whale_median_multiple=0.0, grace_ms=0)
    for i in range(50):
        b.add_trade(tr(T0 + i, 100.0, 20.0, "buy"))
    assert b.flush(T0 + M)[0]["whale_buy_volume"] == 50 * 20.0


# -- the real COIN-M aggTrades day --------------------------------------------------------------------------
AGG_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"


def test_real_aggtrades_day_equals_an_independent_groupby() -> None:
    """105,280 real COIN-M trades: bars equal a pandas groupby computed here from the raw CSV columns."""
    raw = pd.read_csv(require(AGG_DAY))
    # independent of apps.market.parsers_trades: 1 contract = 100 USD, is_buyer_maker true = taker SELL
    base = raw.quantity * 100.0 / raw.price
    side = np.where(raw.is_buyer_maker, "sell", "buy")
    b = BarBuilder(whale_notional=100_000.0)
    bars = []
    for ts, p, a, s, i in zip(raw.transact_time.tolist(), raw.price.tolist(), base.tolist(), side.tolist(),
                              raw.agg_trade_id.astype(str).tolist(), strict=True):
        bars += b.add_trade(Trade(ts, p, a, s, i))
    bars += b.flush(int(raw.transact_time.max()) + 2 * M)
    got = pd.DataFrame(bars).set_index("open_time")
    df = pd.DataFrame({"minute": pd.to_datetime(raw.transact_time // M * M, unit="ms", utc=True),
                       "price": raw.price, "base": base, "sell": raw.is_buyer_maker})
    g = df.groupby("minute")
    assert len(raw) == 105_280 and b.late_trades == 0 and b.duplicates == 0 and b.rejected == {}
    assert list(got.index) == list(g.size().index)
    assert got["open"].tolist() == g.price.first().tolist() and got["close"].tolist() == g.price.last().tolist()
    assert got["high"].tolist() == g.price.max().tolist() and got["low"].tolist() == g.price.min().tolist()
    assert got["trades"].tolist() == g.size().tolist()
    assert got["volume"].to_numpy() == pytest.approx(g.base.sum().to_numpy(), rel=1e-9)
    sells = df[df.sell].groupby("minute").base.sum().reindex(got.index, fill_value=0.0)
    assert got["taker_sell_volume"].to_numpy() == pytest.approx(sells.to_numpy(), rel=1e-9, abs=1e-12)
    whale = df[(df.base * df.price >= 100_000.0) & ~df.sell].groupby("minute").base.sum()
    assert got["whale_buy_volume"].to_numpy() == pytest.approx(
        whale.reindex(got.index, fill_value=0.0).to_numpy(), rel=1e-9, abs=1e-12)
