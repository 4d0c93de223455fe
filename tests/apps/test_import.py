"""`import_market_data` on the real kline files of ../shared/data (skipped when the data kit is absent)."""

import gzip
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.market import importers
from apps.market.models import Candle, Instrument
from apps.market.selectors import candles_as_bar_records
from apps.market.services import candles_import
from tests.datafiles import require

pytestmark = pytest.mark.django_db

API_2020 = "klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz"
FREQTRADE_90D = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
FREQTRADE_PERP = "klines/freqtrade/binance_usdm_ETHUSDT_perp_1m_2025-05-04_2025-06-15__typhonun.csv.gz"
VISION_1M_MS = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip"
VISION_1H_US = "klines/binance_vision_spot_BTCUSDT_1h/BTCUSDT-1h-2026-05-08.zip"


def run(*args) -> str:
    out = StringIO()
    call_command("import_market_data", *map(str, args), stdout=out)
    return out.getvalue()


def first_line(path, skip_header: bool) -> list[str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            lines = zf.read(zf.namelist()[0]).decode().splitlines()
    else:
        with gzip.open(path, "rt") as fh:
            lines = [fh.readline(), fh.readline()]
    return lines[1 if skip_header else 0].strip().split(",")


def candles(exchange: str, symbol: str, timeframe: str):
    return Candle.objects.filter(
        instrument__exchange__code=exchange, instrument__symbol=symbol, timeframe=timeframe
    ).order_by("open_time")


def test_binance_vision_ms_zip_first_row_matches_file():
    path = require(VISION_1M_MS)
    out = run(path)
    assert "read 1440, stored 1440, skipped 0" in out
    row = first_line(path, skip_header=False)
    c = candles("binance", "BTC/USDT", "1m").first()
    assert c.open_time == datetime.fromtimestamp(int(row[0]) / 1000, tz=UTC) == datetime(2020, 1, 1, tzinfo=UTC)
    assert (c.open, c.high, c.low, c.close) == tuple(Decimal(x) for x in row[1:5])
    assert c.volume == Decimal(row[5]) and c.trade_count == int(row[8]) == 493
    assert c.taker_buy_volume == Decimal(row[9])
    assert c.taker_sell_volume == Decimal(row[5]) - Decimal(row[9]) == Decimal("32.044582")


def test_binance_vision_microsecond_zip_is_1h_and_lands_on_the_right_hour():
    path = require(VISION_1H_US)
    row = first_line(path, skip_header=False)
    assert int(row[0]) > 10**15  # the 2025+ dumps count microseconds
    out = run(path)
    assert "binance:BTC/USDT 1h: read 24, stored 24" in out
    qs = candles("binance", "BTC/USDT", "1h")
    c = qs.first()
    assert c.open_time == datetime.fromtimestamp(int(row[0]) / 1_000_000, tz=UTC) == datetime(2026, 5, 8, tzinfo=UTC)
    assert qs.last().open_time == datetime(2026, 5, 8, 23, tzinfo=UTC)
    assert (c.open, c.close, c.volume) == (Decimal(row[1]), Decimal(row[4]), Decimal(row[5]))
    assert c.taker_buy_volume == Decimal(row[9]) and c.trade_count == int(row[8])
    assert not candles("binance", "BTC/USDT", "1m").exists()


def test_binance_api_csv_with_header():
    path = require(API_2020)
    out = run(path)
    assert "[binance_api] -> binance:BTC/USDT 1m: read 8641, stored 8641, skipped 0" in out
    row = first_line(path, skip_header=True)  # timestamp,open,high,low,close,volume,close_time,quote_av,trades,tb_base
    c = candles("binance", "BTC/USDT", "1m").first()
    assert c.open_time == datetime.fromisoformat(row[0]).replace(tzinfo=UTC)
    assert (c.open, c.high, c.low, c.close, c.volume) == tuple(Decimal(x) for x in row[1:6])
    assert c.trade_count == int(row[8]) and c.taker_buy_volume == Decimal(row[9])
    assert c.taker_sell_volume == Decimal(row[5]) - Decimal(row[9])


def test_freqtrade_csv_has_no_taker_split_and_reimport_stores_nothing():
    path = require(FREQTRADE_90D)
    out = run(path)
    assert "[freqtrade] -> binance:BTC/USDT 1m: read 130708, stored 130708, skipped 0" in out
    row = first_line(path, skip_header=True)  # date,open,high,low,close,volume
    qs = candles("binance", "BTC/USDT", "1m")
    c = qs.first()
    assert c.open_time == datetime.fromisoformat(row[0]) == datetime(2025, 5, 20, tzinfo=UTC)
    assert (c.open, c.high, c.low, c.close, c.volume) == tuple(Decimal(x) for x in row[1:6])
    assert c.taker_buy_volume is None and c.taker_sell_volume is None  # unknown, not zero
    rec = candles_as_bar_records([c])[0]  # the ghosts see NaN, not 0
    assert rec["taker_buy_volume"] != rec["taker_buy_volume"] and rec["close"] == float(row[4])

    again = run(path)
    assert "read 130708, stored 0, skipped 0" in again
    assert qs.count() == 130708


def test_usdm_file_name_gives_perp_symbol_and_flags_override():
    path = require(FREQTRADE_PERP)
    out = run(path)
    assert "binanceusdm:ETH/USDT:USDT 1m: read 60191, stored 60191" in out
    inst = Instrument.objects.get(exchange__code="binanceusdm", symbol="ETH/USDT:USDT")
    assert (inst.base, inst.quote) == ("ETH", "USDT")
    out = run(path, "--exchange", "okx", "--symbol", "ETH/USDT")
    assert "okx:ETH/USDT 1m: read 60191, stored 60191" in out


def test_file_name_inference():
    info = importers.infer_file_info
    assert info(require(VISION_1H_US)) == importers.FileInfo("binance", "BTC/USDT", "1h")
    assert info(require(FREQTRADE_PERP)) == importers.FileInfo("binanceusdm", "ETH/USDT:USDT", "1m")
    assert info(require(API_2020)) == importers.FileInfo("binance", "BTC/USDT", "1m")


BAD_CSV = """date,open,high,low,close,volume
2025-01-01 00:00:00+00:00,100,101,99,100.5,10
2025-01-01 00:01:00+00:00,NaN,101,99,100.5,10
2025-01-01 00:02:00+00:00,100,101,99,100.5,-3
2025-01-01 00:03:00+00:00,100,98,99,100.5,10
2025-01-01 00:04:00+00:00,100,101,99,102,10
2025-01-01 00:05:00+00:00,0,101,99,100,10
2025-01-01 00:06:00+00:00,100,inf,99,100,10
2025-01-01 00:07:00+00:00,100.5,102,100,101,7
2025-01-01 00:07:00+00:00,100.5,102,100,101.5,8
2025-01-01 00:08:00+00:00,101,103,100.25,102.75,0
"""


def test_bad_rows_are_skipped_by_reason_and_good_rows_kept(tmp_path):
    path = tmp_path / "binance_spot_BTCUSDT_1m_bad.csv"
    path.write_text(BAD_CSV)
    out = run(path)
    assert "read 10, stored 3, skipped 7" in out
    assert (
        "duplicate_in_file=1, high_below_low=1, negative_volume=1, non_finite=2, non_positive_price=1, "
        "open_close_outside_range=1"
    ) in out
    qs = candles("binance", "BTC/USDT", "1m")
    assert [c.open_time.minute for c in qs] == [0, 7, 8]
    assert qs.get(open_time=datetime(2025, 1, 1, 0, 7, tzinfo=UTC)).close == Decimal("101")  # first of the dupes
    assert qs.get(open_time=datetime(2025, 1, 1, 0, 8, tzinfo=UTC)).low == Decimal("100.25")


def test_service_report_and_taker_buy_above_volume(desk):
    frame = importers.read_klines(require(VISION_1M_MS))
    frame.loc[3, "taker_buy_volume"] = frame.loc[3, "volume"] + 1
    frame.loc[5, "trade_count"] = -1
    report = candles_import(instrument=desk["instrument"], frame=frame, timeframe="1m")
    assert (report.read, report.stored) == (1440, 1438)
    assert report.skipped == {"taker_buy_gt_volume": 1, "negative_trade_count": 1}
    again = candles_import(instrument=desk["instrument"], frame=frame, timeframe="1m")
    assert (again.read, again.stored) == (1440, 0)


def test_unknown_format_is_a_command_error(tmp_path):
    path = tmp_path / "BTCUSDT-trades.csv"
    path.write_text("id,price,qty\n1,100,2\n")
    with pytest.raises(CommandError, match="unknown kline format"):
        run(path)
    with pytest.raises(CommandError, match="no such file"):
        run(tmp_path / "missing.csv")
