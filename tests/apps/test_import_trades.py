"""`import_market_data` on the real trade-level files: aggTrades -> candles + large trades, liquidation and
large-trade recordings. Expected values come from the raw files (csv/pandas in the test), not the loaders."""

import csv
import gzip
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command

from apps.market.models import Candle, Instrument, LargeTrade, LiquidationEvent
from tests.datafiles import require

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

CM_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
LIQ_A = "liquidations/binance_usdm_forceorder_2025-06-23_2059-2122.csv"
LIQ_B = "liquidations/binance_usdm_forceorder_2025-06-23_2122-2156.csv"
LIQ_JAN = "liquidations/binance_usdm_forceorder_2025-01-26_2025-02-06.csv"
PERP_1M = "klines/freqtrade/binance_usdm_BTCUSDT_perp_1m_2025-05-25_2025-06-24__thesnowguru.csv.gz"
LARGE_DEC = "trades/binance_usdm_large_aggtrades_ge15kusd_2025-12-18_2025-12-28.csv.gz"


def run(*args) -> str:
    out = StringIO()
    call_command("import_market_data", *map(str, args), stdout=out)
    return out.getvalue()


def test_coinm_agg_trades_become_candles_and_large_trades_once():
    path = require(CM_DAY)
    out = run(path)
    assert "-> binancecoinm:BTC/USD:BTC 1m: trades read 105280, aggregated 105280, skipped 0 (none)" in out
    inst = Instrument.objects.get(exchange__code="binancecoinm", symbol="BTC/USD:BTC")
    assert (inst.base, inst.quote) == ("BTC", "USD")
    candles = Candle.objects.filter(instrument=inst, timeframe="1m").order_by("open_time")
    raw = pd.read_csv(path)
    minutes = raw["transact_time"] // 60_000
    assert candles.count() == minutes.nunique() == 1437
    assert f"bars built 1437, stored 1437; large trades (>= 100000 USD) {(raw['quantity'] >= 1000).sum()}" in out

    first = candles.first()
    m0 = raw[minutes == minutes.iloc[0]]
    assert first.open_time == datetime(2026, 5, 8, tzinfo=UTC)
    assert (first.open, first.close) == (Decimal(str(m0["price"].iloc[0])), Decimal(str(m0["price"].iloc[-1])))
    assert first.trade_count == len(m0)
    sells = m0["is_buyer_maker"]
    base = m0["quantity"] * 100 / m0["price"]
    assert float(first.taker_buy_volume) == pytest.approx(base[~sells].sum(), rel=1e-9)
    assert float(first.taker_sell_volume) == pytest.approx(base[sells].sum(), rel=1e-9)
    assert first.liq_long_volume is None  # no liquidation recording covers this day

    # stored whale volume per minute == stored large trades per minute (two writers, one rule)
    large = pd.DataFrame(LargeTrade.objects.filter(instrument=inst).values("ts", "amount", "side"))
    assert len(large) == (raw["quantity"] * 100 >= float(inst.whale_notional)).sum()
    large["amount"] = large["amount"].astype(float)
    by_minute = large.groupby([large["ts"].dt.floor("min"), "side"])["amount"].sum().unstack(fill_value=0.0)
    stored = pd.DataFrame(candles.values("open_time", "whale_buy_volume", "whale_sell_volume")).set_index("open_time")
    stored = stored.astype(float)
    np.testing.assert_allclose(stored.loc[by_minute.index, "whale_buy_volume"], by_minute["buy"], rtol=1e-9)
    np.testing.assert_allclose(stored.loc[by_minute.index, "whale_sell_volume"], by_minute["sell"], rtol=1e-9)
    assert stored.drop(by_minute.index).eq(0).all().all()

    again = run(path)
    assert "bars built 1437, stored 0; large trades" in again and "stored 0; aggregation" in again
    assert candles.count() == 1437 and LargeTrade.objects.filter(instrument=inst).count() == len(large)


def liq_rows(relpath) -> list[list[str]]:
    with open(require(relpath), newline="") as fh:
        return list(csv.reader(fh))


def test_liquidations_set_candle_volumes_only_where_recorded():
    # files given in the "wrong" order: the command stores candles first, then applies the recordings
    out = run(require(LIQ_B), require(LIQ_A), require(PERP_1M))
    assert out.index("[freqtrade]") < out.index("2059-2122.csv [liquidations]")
    assert "read 446, stored 64, skipped 382 (symbol_not_selected=382); junk prefix cut from 1 row(s)" in out
    inst = Instrument.objects.get(exchange__code="binanceusdm", symbol="BTC/USDT:USDT")
    btc = [r for name in (LIQ_A, LIQ_B) for r in liq_rows(name) if r[0] == "BTC"]
    assert LiquidationEvent.objects.filter(instrument=inst).count() == len(btc) == 57

    # expected per-minute volumes straight from the raw rows: SELL = longs liquidated, filled qty in BTC
    expected: dict[datetime, list[float]] = {}
    for r in btc:
        minute = datetime.fromtimestamp(int(r[10]) // 60_000 * 60, tz=UTC)
        acc = expected.setdefault(minute, [0.0, 0.0])
        acc[0 if r[1] == "SELL" else 1] += float(r[9])
    first = datetime(2025, 6, 23, 20, 59, tzinfo=UTC)  # first event of any symbol: 20:59:38
    last = datetime(2025, 6, 23, 21, 56, tzinfo=UTC)  # last: 21:56:35
    candles = Candle.objects.filter(instrument=inst, timeframe="1m")
    covered = candles.filter(open_time__gte=first, open_time__lte=last).order_by("open_time")
    assert covered.count() == 58
    for c in covered:
        long_, short = expected.get(c.open_time, (0.0, 0.0))  # in the recording, no event = 0
        assert float(c.liq_long_volume) == pytest.approx(long_, abs=1e-12), c.open_time
        assert float(c.liq_short_volume) == pytest.approx(short, abs=1e-12), c.open_time
    assert sum(float(c.liq_long_volume) + float(c.liq_short_volume) for c in covered) > 0
    # before and after the recording: unknown, never an invented 0
    assert not candles.exclude(open_time__gte=first, open_time__lte=last).exclude(liq_long_volume=None).exists()
    assert candles.get(open_time=datetime(2025, 6, 23, 20, 58, tzinfo=UTC)).liq_long_volume is None

    again = run(require(LIQ_A), require(LIQ_B))
    assert again.count("stored 0, skipped") == 2
    assert LiquidationEvent.objects.filter(instrument=inst).count() == 57
    c = covered.get(open_time=datetime(2025, 6, 23, 21, 15, tzinfo=UTC))
    assert float(c.liq_short_volume) == pytest.approx(expected[c.open_time][1])  # re-applied, not doubled


def test_junk_first_line_symbol_and_recorder_duplicates():
    out = run(require(LIQ_A), "--liq-symbols", "ADA/USDT:USDT")
    raw = liq_rows(LIQ_A)[0]
    assert raw[0].startswith("Hello Arbitrage Trading Bot") and raw[0].endswith("ADA")
    ev = LiquidationEvent.objects.get(instrument__symbol="ADA/USDT:USDT", ts=datetime.fromtimestamp(
        int(raw[10]) / 1000, tz=UTC))
    assert (ev.side, ev.price, ev.amount) == ("long", Decimal(raw[5]), Decimal(raw[9]))
    assert ev.source == "binance_usdm_forceorder_2025-06-23_2059-2122.csv"
    assert "symbol_not_selected=" in out
    # the January recorder wrote most rows twice: stored once, counted as duplicates
    jan = run(require(LIQ_JAN), "--liq-symbols", "all")
    rows = liq_rows(LIQ_JAN)
    unique = {(r[0], r[1], r[5], r[9], r[10]) for r in rows}
    assert f"read {len(rows)}, stored {len(unique)}, skipped {len(rows) - len(unique)} (duplicate_in_file=" in jan
    assert LiquidationEvent.objects.filter(source="binance_usdm_forceorder_2025-01-26_2025-02-06.csv").count() == len(
        unique
    )


def test_large_trade_recording_one_instrument_per_symbol():
    path = require(LARGE_DEC)
    rows = list(csv.reader(gzip.open(path, "rt")))
    out = run(path)
    keys = {(r[1].strip(), r[2].strip()) for r in rows}
    assert f"read {len(rows)}, stored {len(keys)}, skipped {len(rows) - len(keys)} (duplicate_in_file=" in out
    btc_rows = [r for r in rows if r[1].strip() == "BTCUSDT"]
    btc = LargeTrade.objects.filter(instrument__exchange__code="binanceusdm", instrument__symbol="BTC/USDT:USDT")
    assert btc.count() == len({r[2].strip() for r in btc_rows})
    r = btc_rows[0]
    t = btc.get(trade_id=r[2].strip())
    assert t.ts == datetime.fromtimestamp(int(r[5]) / 1000, tz=UTC)
    assert (t.price, t.amount) == (Decimal(r[3].strip()), Decimal(r[4].strip()))
    assert t.side == ("sell" if r[6].strip() == "True" else "buy")
    assert set(Instrument.objects.filter(exchange__code="binanceusdm").values_list("base", flat=True)) == {
        r[1].strip()[:-4] for r in rows
    }
    assert not Candle.objects.exists()  # a filtered trade stream makes no bars
    assert "stored 0, skipped" in run(path)


BAD_AGG = """agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker
1,100.5,2,1,1,1700000000000,false
2,NaN,2,2,2,1700000000001,false
3,100.5,-1,3,3,1700000000002,true
4,junk,1,4,4,1700000000003,true
5,100.5,1,5,5,1700000000004,maybe
1,100.5,2,1,1,1700000000000,false
6,100.6,3,6,6,1700000030000,true
7,150.0,3,7,7,1700000040000,true
8,100.4,1,8,8,1700000070000,false
"""


def test_bad_trade_rows_are_counted_never_fatal(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2023-11-14.csv"
    path.write_text(BAD_AGG)
    out = run(path)
    assert "-> binance:BTC/USDT 1m: trades read 9, aggregated 3, skipped 6 " in out
    assert "(bad_side=1, duplicate_in_file=1, non_finite=2, non_positive=1, price_band=1)" in out
    bars = list(Candle.objects.order_by("open_time"))
    assert [b.trade_count for b in bars] == [2, 1]
    assert bars[0].close == Decimal("100.6") and bars[0].high == Decimal("100.6")  # 150 (+49 %) was rejected
    assert bars[0].taker_sell_volume == Decimal("3") and bars[0].taker_buy_volume == Decimal("2")
