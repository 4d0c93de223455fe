"""Pure loaders of the trade-level files (apps.market.parsers_trades) on the real shared data, plus junk rows.

Expected values are read from the raw file lines in the test (csv module), not from the loader.
Run without Django: `.venv/bin/pytest tests/apps/test_import_parsers.py -q -p no:django`.
"""

import csv
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from apps.market import parsers_trades as P
from tests.datafiles import _flush_redis, require, services_use_test_redis  # noqa: F401

CM_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
LIQ_JUNK = "liquidations/binance_usdm_forceorder_2025-06-23_2059-2122.csv"
LIQ_DEC = "liquidations/binance_usdm_forceorder_2025-12-27_2025-12-28.csv"
LIQ_JAN = "liquidations/binance_usdm_forceorder_2025-01-26_2025-02-06.csv"
LARGE_DEC = "trades/binance_usdm_large_aggtrades_ge15kusd_2025-12-18_2025-12-28.csv.gz"
LARGE_JAN = "trades/binance_usdm_large_aggtrades_ge15kusd_2025-01-26_2025-02-06.csv.gz"
PUBLIC = "trades/freqtrade_orderflow_public_trades_list_2023-02-02.csv"


def raw_rows(path) -> list[list[str]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            text = zf.read(zf.namelist()[0]).decode()
    elif path.suffix == ".gz":
        text = gzip.open(path, "rt").read()
    else:
        text = path.read_text()
    return list(csv.reader(io.StringIO(text)))


def test_formats_are_detected():
    assert P.detect_trade_format(require(CM_DAY)) == "agg_trades"
    assert P.detect_trade_format(require(LIQ_JUNK)) == "liquidations"
    assert P.detect_trade_format(require(LIQ_DEC)) == "liquidations"
    assert P.detect_trade_format(require(LARGE_DEC)) == "large_trades"
    assert P.detect_trade_format(require(PUBLIC)) == "public_trades"
    assert P.detect_trade_format(require("klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip")) is None


def test_coinm_agg_trades_are_converted_from_100_usd_contracts_to_btc():
    path = require(CM_DAY)
    assert P.agg_trades_market(path) == ("coinm", 100.0)
    rows = raw_rows(path)
    header, body = rows[0], rows[1:]
    assert header[2] == "quantity"
    df = P.read_agg_trades(path)
    assert len(df) == len(body) == 105_280
    first = body[0]
    assert df.loc[0, "ts_ms"] == int(first[5]) and df.loc[0, "id"] == first[0]
    assert df.loc[0, "amount"] == pytest.approx(float(first[2]) * 100 / float(first[1]), rel=1e-15)
    # is_buyer_maker true = the taker SOLD
    ibm = np.array([r[6] == "true" for r in body])
    assert (df["side"].to_numpy() == np.where(ibm, "sell", "buy")).all()
    # notional of each trade in USD is contracts * 100, whatever the price
    assert np.allclose(df["price"] * df["amount"], df["quantity"] * 100, rtol=1e-12)
    assert P.agg_trades_market(Path("um/BTCUSDT-aggTrades-2026-05-08.zip")) == ("linear", None)
    assert P.agg_trades_market(Path("spot/BTCUSDT-aggTrades-2026-05-08.zip")) == ("linear", None)
    assert P.agg_trades_market(Path("ETHUSD_PERP-aggTrades-2026-05-08.zip")) == ("coinm", 10.0)
    assert P.agg_trades_market(Path("futures/cm/BTCUSD_250627-aggTrades-2025-05-08.zip")) == ("coinm", 100.0)


def test_liquidations_junk_first_line_none_price_and_sides():
    path = require(LIQ_JUNK)
    rows = raw_rows(path)
    assert rows[0][0].startswith("Hello Arbitrage Trading Bot") and rows[0][6] == "None"
    df = P.read_liquidations(path)
    assert len(df) == len(rows)
    assert df.loc[0, "raw_symbol"] == "ADA" and df.loc[0, "symbol"] == "ADA/USDT:USDT"
    assert df.loc[0, "junk_prefix"] == "Hello Arbitrage Trading Bot"
    assert (df["junk_prefix"].iloc[1:] == "").all()
    assert df["avg_price"].isna().all()  # the recorder wrote None everywhere in this file
    btc = df[df["raw_symbol"] == "BTC"]
    assert set(btc["symbol"]) == {"BTC/USDT:USDT"} and len(btc) == 40
    sides = {r[1] for r in rows if r[0] == "BTC"}
    assert sides <= {"SELL", "BUY"}
    expected = ["long" if r[1] == "SELL" else "short" for r in rows if r[0] == "BTC"]
    assert btc["side"].tolist() == expected
    assert btc["amount"].tolist() == [float(r[9]) for r in rows if r[0] == "BTC"]


def test_liquidation_symbols_tier_column_and_duplicates():
    dec = P.read_liquidations(require(LIQ_DEC))
    assert dec["tier"].notna().sum() == sum(len(r) == 13 for r in raw_rows(require(LIQ_DEC))) == 46
    assert "币安人生/USDT:USDT" in set(dec["symbol"])  # a real non-ASCII Binance contract, not junk
    jan = P.read_liquidations(require(LIQ_JAN))
    syms = set(jan["symbol"])
    assert {"BTC/USDT:USDT", "BTC/USDC:USDC"} <= syms
    assert "BTC/USDT:USDT-250627" in set(P.read_liquidations(require(LIQ_JUNK))["symbol"])  # quarterly
    clean, skipped = P.sanitize_liquidations(jan)
    assert skipped == {"duplicate_in_file": len(jan) - len(clean)} and skipped["duplicate_in_file"] >= 1668


def test_large_trades_leading_space_extra_columns_and_per_market_ids():
    path = require(LARGE_DEC)
    rows = raw_rows(path)
    df = P.read_large_trades(path)
    assert len(df) == len(rows) == 4707
    assert df["tier"].notna().sum() == sum(len(r) == 9 for r in rows) == 87
    assert set(df["market_id"]) == {r[1].strip() for r in rows}
    first = rows[0]
    assert df.loc[0, "symbol"] == f"{first[1].strip()[:-4]}/USDT:USDT"
    assert df.loc[0, "ts_ms"] == int(first[5]) and df.loc[0, "side"] == ("sell" if first[6] == "True" else "buy")
    clean, skipped = P.sanitize_trades(df)
    # the 9-column rows repeat trades already written with 7 columns: same market and agg id
    assert skipped == {"duplicate_in_file": len(df) - len(clean)}
    assert not clean.duplicated(["market_id", "id"]).any()
    jan = P.read_large_trades(require(LARGE_JAN))
    assert (jan["price"] * jan["amount"] > 14_999).all()  # the recorder's filter


BAD_AGG = """agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker
1,100.5,2,1,1,1700000000000,false
2,NaN,2,2,2,1700000000001,false
3,100.5,-1,3,3,1700000000002,true
4,0,1,4,4,1700000000003,true
5,100.5,1,5,5,garbage,true
6,100.5,1,6,6,1700000000005,maybe
6,100.5,1,6,6,1700000000005,true
7,100.7,3,7,7,1700000000060000,true
"""


def test_bad_agg_trade_rows_are_counted_not_fatal(tmp_path):
    path = tmp_path / "BTCUSDT-aggTrades-2023-11-14.csv"
    path.write_text(BAD_AGG)
    df = P.read_agg_trades(path)
    assert len(df) == 8
    clean, skipped = P.sanitize_trades(df)
    assert skipped == {"non_finite": 1, "non_positive": 2, "bad_time": 1, "bad_side": 1}
    assert clean["id"].tolist() == ["1", "6", "7"]
    assert clean["ts_ms"].iloc[-1] == 1_700_000_000_060  # µs timestamp read as ms
