"""`import_market_data` on broken files (issue 12, "Market data imports"): every bad file is built here, in
tmp_path, from the REAL files of ../shared/data (truncated, corrupted, columns added or cut, timestamps
shifted); no data file is committed.

Contract checked for each: no traceback (a refused file is a CommandError whose one line names the file and,
where the file has one, the line), the report line keeps the counts (read, stored, skipped by reason, and
the first bad line per reason), and nothing wrong is stored: no row from a refused file, no row in the
future, no instrument for a file without a good row. Line numbers count the file's physical lines from 1,
the header included (what `sed -n Np` / `zcat | sed -n Np` shows).
"""

import gzip
import random
import zipfile
import zlib
from datetime import UTC, datetime
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from apps.market import importers
from apps.market import parsers_trades as pt
from apps.market.models import Candle, Exchange, Instrument, LargeTrade, LiquidationEvent
from tests.datafiles import BTC_90D, require

pytestmark = pytest.mark.django_db

VISION_1M = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip"
CM_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
LIQ_B = "liquidations/binance_usdm_forceorder_2025-06-23_2122-2156.csv"
LARGE_DEC = "trades/binance_usdm_large_aggtrades_ge15kusd_2025-12-18_2025-12-28.csv.gz"
PUBLIC = "trades/freqtrade_orderflow_public_trades_list_2023-02-02.csv"
MS_2099 = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * 1000)
MS_2100 = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


def run(*args) -> str:
    out = StringIO()
    call_command("import_market_data", *map(str, args), stdout=out, stderr=StringIO())
    return out.getvalue()


def refused(*args) -> tuple[str, str]:
    """(the CommandError's message, stdout) of a run that must end in a CommandError, never a traceback."""
    out = StringIO()
    with pytest.raises(CommandError) as exc:
        call_command("import_market_data", *map(str, args), stdout=out, stderr=StringIO())
    return str(exc.value), out.getvalue()


def member_lines(relpath: str) -> list[str]:
    """The lines of the single CSV inside a real data zip."""
    with zipfile.ZipFile(require(relpath)) as zf:
        return zf.read(zf.namelist()[0]).decode().splitlines()


def write_lines(path, lines: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def nothing_stored() -> bool:
    return not (Candle.objects.exists() or Instrument.objects.exists() or Exchange.objects.exists()
                or LargeTrade.objects.exists() or LiquidationEvent.objects.exists())


def set_field(line: str, i: int, value) -> str:
    f = line.split(",")
    f[i] = str(value)
    return ",".join(f)


# -- unreadable files: refused whole, named, nothing stored -----------------------------------------------
def test_truncated_large_gzip_is_refused_naming_the_line_and_the_other_files_still_import(tmp_path):
    raw = require(BTC_90D).read_bytes()
    cut = raw[: len(raw) * 55 // 100]
    bad = tmp_path / "binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__cut.csv.gz"
    bad.write_bytes(cut)
    partial = zlib.decompressobj(wbits=31).decompress(cut)  # what the cut file still holds
    line = partial.count(b"\n") + 1  # the data stops inside this line
    assert 60_000 < line < 80_000

    msg, out = refused(bad, require(VISION_1M))
    first, reason = msg.splitlines()
    assert first == "1 of 2 files refused:"
    assert reason.startswith(f"{bad.name}: refused, truncated gzip: the data ends inside line {line}")
    assert reason.endswith("nothing stored")
    assert "read 1440, stored 1440, skipped 0" in out  # the good file of the same run is imported
    assert not Candle.objects.filter(instrument__symbol="BTC/USDT", open_time__year=2025).exists()
    assert Candle.objects.count() == 1440


@pytest.mark.parametrize("relpath", [VISION_1M, CM_DAY])
def test_corrupt_zip_member_is_refused(tmp_path, relpath):
    z = bytearray(require(relpath).read_bytes())
    for i in range(len(z) // 2, len(z) // 2 + 64):  # inside the compressed data, far from both headers
        z[i] ^= 0x5A
    bad = tmp_path / require(relpath).name
    bad.write_bytes(bytes(z))
    msg, _ = refused(bad)
    assert msg.startswith(f"{bad.name}: refused, corrupt zip") and "nothing stored" in msg
    assert nothing_stored()


def test_random_zip_and_other_unreadable_files_are_refused(tmp_path):
    rng = random.Random(12)
    cases = {}
    p = tmp_path / "BTCUSDT-1m-2020-01-01.zip"
    p.write_bytes(rng.randbytes(5000))  # not a zip at all
    cases[p] = "not a zip archive"
    p = tmp_path / "z2" / "BTCUSDT-1m-2020-01-02.zip"
    p.parent.mkdir()
    with zipfile.ZipFile(p, "w") as zf:  # a real zip holding random bytes
        zf.writestr("BTCUSDT-1m-2020-01-02.csv", rng.randbytes(5000))
    cases[p] = "unknown kline format"
    p = tmp_path / "z3" / "BTCUSDT-1m-2020-01-03.zip"
    p.parent.mkdir()
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.csv", "\n".join(member_lines(VISION_1M)))
        zf.writestr("b.csv", "\n".join(member_lines(VISION_1M)))
    cases[p] = "zip must hold exactly one CSV, found 2"
    p = tmp_path / "binance_spot_BTCUSDT_1m_x.csv.gz"
    p.write_bytes(rng.randbytes(3000))  # .gz that is not gzip
    cases[p] = "not a gzip file"
    p = tmp_path / "binance_spot_BTCUSDT_1m_empty.csv"
    p.write_bytes(b"")
    cases[p] = "empty file"
    for path, reason in cases.items():
        msg, _ = refused(path)
        assert msg.startswith(f"{path.name}: refused, ") and reason in msg, msg
        assert "nothing stored" in msg and "\n" not in msg.strip()
    msg, _ = refused(*cases)  # all at once: one line each
    assert msg.startswith(f"{len(cases)} of {len(cases)} files refused")
    assert all(f"{path.name}: refused, " in msg for path in cases)
    assert nothing_stored()


# -- rows with the wrong column count: skipped, counted, the first one named ------------------------------
def test_wrong_column_count_rows_are_skipped_counted_and_named(tmp_path):
    lines = member_lines(VISION_1M)
    lines[99] += ",7"  # 13 fields
    lines[199] = lines[199].rsplit(",", 1)[0]  # 11 fields
    lines[299] = ",".join(lines[299].split(",")[:6])  # 6: an OHLCV row inside a 12-column file
    path = write_lines(tmp_path / "BTCUSDT-1m-2020-01-01.csv", lines)
    out = run(path)
    assert "read 1440, stored 1437, skipped 3 (wrong_column_count=3); first bad line: wrong_column_count=100" in out
    stored = set(Candle.objects.values_list("open_time", flat=True))
    bad_times = {datetime.fromtimestamp(int(lines[i].split(",")[0]) / 1000, tz=UTC) for i in (99, 199, 299)}
    assert len(stored) == 1437 and not stored & bad_times

    agg = member_lines(CM_DAY)[:3001]
    agg[1500] += ",extra,fields"
    agg[2500] = ",".join(agg[2500].split(",")[:5])
    out = run(write_lines(tmp_path / "BTCUSD_PERP-aggTrades-2026-05-08.csv", agg))
    assert "trades read 3000, aggregated 2998, skipped 2 (wrong_column_count=2)" in out
    assert "first bad line: wrong_column_count=1501" in out

    ft = gzip.open(require(BTC_90D), "rt").read().splitlines()[:2001]
    ft[7] += ",1"
    out = run(write_lines(tmp_path / "binance_spot_ETHUSDT_1m_2025-05-20_x.csv.gz", ft))
    assert "read 2000, stored 1999, skipped 1 (wrong_column_count=1); first bad line: wrong_column_count=8" in out


# -- time range: impossible times counted, rows beyond now refused ---------------------------------------
def test_out_of_range_timestamps_are_counted_never_a_traceback(tmp_path):
    lines = member_lines(VISION_1M)
    lines[3] = set_field(lines[3], 0, "99999999999999999999")  # beyond every datetime
    lines[4] = set_field(lines[4], 0, "-5")
    lines[5] = set_field(lines[5], 0, "1577836800")  # seconds, read as ms: 1970-01-19
    lines[6] = set_field(lines[6], 0, "9223372036854775807")
    out = run(write_lines(tmp_path / "BTCUSDT-1m-2020-01-01.csv", lines))
    assert "read 1440, stored 1436, skipped 4 (bad_time=3, too_old=1); first bad line: bad_time=4, too_old=6" in out

    ft = gzip.open(require(BTC_90D), "rt").read().splitlines()[:101]
    for i, date in ((10, "9999-12-31 00:00:00+00:00"), (11, "2262-05-01 00:00:00+00:00"),
                    (12, "1677-01-01 00:00:00+00:00"), (13, "1970-01-01 00:00:00+00:00"), (14, "99999-01-01")):
        ft[i] = set_field(ft[i], 0, date)
    out = run(write_lines(tmp_path / "binance_spot_ETHUSDT_1m_2025-05-20.csv.gz", ft))
    assert "read 100, stored 95, skipped 5 (bad_time=4, too_old=1); first bad line: bad_time=11, too_old=14" in out

    agg = member_lines(CM_DAY)[:201]
    agg[20] = set_field(agg[20], 5, "99999999999999999999")
    agg[21] = set_field(agg[21], 5, "9223372036854775807")
    agg[22] = set_field(agg[22], 5, "1000")
    out = run(write_lines(tmp_path / "BTCUSD_PERP-aggTrades-2026-05-08.csv", agg))
    assert "trades read 200, aggregated 197, skipped 3 (bad_time=2, too_old=1)" in out
    assert "first bad line: bad_time=21, too_old=23" in out
    assert not Candle.objects.filter(open_time__year__lt=2009).exists()
    assert not Candle.objects.filter(open_time__year__gt=2026).exists()


def test_klines_in_2099_are_refused_and_counted(tmp_path):
    lines = member_lines(VISION_1M)
    shift = MS_2099 - int(lines[0].split(",")[0])
    for i in range(1430, 1440):  # the last ten rows, moved to 2099-01-01
        f = lines[i].split(",")
        f[0], f[6] = str(int(f[0]) + shift), str(int(f[6]) + shift)
        lines[i] = ",".join(f)
    out = run(write_lines(tmp_path / "BTCUSDT-1m-2020-01-01.csv", lines))
    assert "read 1440, stored 1430, skipped 10 (future=10); first bad line: future=1431" in out
    assert Candle.objects.count() == 1430
    assert not Candle.objects.filter(open_time__year__gt=2020).exists()


def test_a_candle_is_refused_until_it_has_closed():
    now = pd.Timestamp("2026-01-01 12:00:30", tz="UTC")
    frame = pd.DataFrame({
        "open_time": pd.DatetimeIndex([now.floor("1min") - pd.Timedelta(minutes=1), now.floor("1min"),
                                       now.floor("1min") + pd.Timedelta(days=3)]).astype("datetime64[ns, UTC]"),
        "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0, "taker_buy_volume": np.nan,
        "trade_count": np.nan,
    })
    now_ms = int(now.timestamp() * 1000)
    clean, skipped = importers.sanitize(frame, now_ms=now_ms, timeframe="1m")
    assert skipped == {"future": 2} and clean["open_time"].tolist() == [frame["open_time"].iloc[0]]
    clean, skipped = importers.sanitize(frame, now_ms=now_ms)  # no timeframe: only open times beyond now
    assert skipped == {"future": 1} and len(clean) == 2
    # the tolerance: a 1m candle that closes within 5 s of now is taken
    assert importers.sanitize(frame.iloc[[1]], now_ms=now_ms + 25_000, timeframe="1m")[1] == {}


def test_agg_trade_in_2100_is_refused_and_the_good_trades_after_it_are_kept(tmp_path):
    lines = member_lines(CM_DAY)[:2001]  # the header and the day's first 2000 trades
    bad = list(lines)
    bad[1850] = set_field(bad[1850], 5, MS_2100)  # line 1851: 150 good trades follow it
    good = lines[:1850] + lines[1851:]
    out = run(write_lines(tmp_path / "bad" / "BTCUSD_PERP-aggTrades-2026-05-08.csv", bad))
    assert "trades read 2000, aggregated 1999, skipped 1 (future=1); first bad line: future=1851" in out
    assert "out_of_order" not in out
    run(write_lines(tmp_path / "good" / "BTCUSD_PERP-aggTrades-2026-05-08.csv", good),
        "--symbol", "XBT/USD:XBT")  # the same trades without the bad one, on another instrument
    cols = ["open_time", "open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume",
            "trade_count", "whale_buy_volume", "whale_sell_volume"]
    got = list(Candle.objects.filter(instrument__symbol="BTC/USD:BTC").order_by("open_time").values_list(*cols))
    want = list(Candle.objects.filter(instrument__symbol="XBT/USD:XBT").order_by("open_time").values_list(*cols))
    assert got == want and sum(r[8] for r in got) == 1999
    assert not Candle.objects.filter(open_time__year__gt=2026).exists()


def test_the_aggregation_clock_is_now_not_the_newest_trade():
    """bars_from_trades on its own (no sanitize_trades in front): the live Sanitiser, on the wall clock, refuses
    the 2100 trade as future; it never becomes the newest trade, so the 150 after it are not out of order."""
    trades = pt.read_agg_trades(require(CM_DAY)).iloc[:2000].copy()
    trades.loc[1849, "ts_ms"] = MS_2100
    built = importers.bars_from_trades(trades)
    assert built.rejected == {"future": 1} and built.first == {"future": 1849} and built.accepted == 1999
    ref = importers.bars_from_trades(trades.drop(index=1849).reset_index(drop=True))
    pd.testing.assert_frame_equal(built.bars, ref.bars)
    assert built.bars["open_time"].max() < pd.Timestamp("2026-05-09", tz="UTC")
    # a data clock can still be given (a replay): then the same trade is in its present
    assert importers.bars_from_trades(trades, now_ms=MS_2100).rejected["out_of_order"] == 150


def test_liquidation_and_large_trade_rows_beyond_now_are_refused(tmp_path):
    liq = (require(LIQ_B).read_text()).splitlines()
    btc = [i for i, r in enumerate(liq) if r.startswith("BTC,")]
    liq[btc[3]] = set_field(liq[btc[3]], 10, MS_2100)
    out = run(write_lines(tmp_path / LIQ_B.split("/")[-1], liq), "--liq-symbols", "BTC/USDT:USDT")
    assert "future=1" in out and f"first bad line: future={btc[3] + 1}" in out
    assert LiquidationEvent.objects.count() == len(btc) - 1
    assert not LiquidationEvent.objects.filter(ts__year__gt=2025).exists()

    large = gzip.open(require(LARGE_DEC), "rt").read().splitlines()[:300]
    large[42] = set_field(large[42], 5, MS_2100)
    out = run(write_lines(tmp_path / LARGE_DEC.split("/")[-1], large))
    assert "read 300, stored 299, skipped 1 (future=1); first bad line: future=43" in out
    assert not LargeTrade.objects.filter(ts__year__gt=2025).exists()


# -- header-only files ------------------------------------------------------------------------------------
def test_header_only_files_store_nothing_and_create_no_instrument(tmp_path):
    ft_header = gzip.open(require(BTC_90D), "rt").readline().strip()
    files = [
        write_lines(tmp_path / "binance_spot_BTCUSDT_1m_2025-05-20_empty.csv.gz", [ft_header]),
        write_lines(tmp_path / "BTCUSD_PERP-aggTrades-2026-05-08.csv", member_lines(CM_DAY)[:1]),
        write_lines(tmp_path / "BTCUSDT-1m-2020-01-01.csv", [",".join(importers.VISION_COLUMNS)]),
    ]
    for path in files:
        out = run(path)
        assert path.name in out and "read 0" in out and "no instrument created" in out, out
    public = write_lines(tmp_path / "public.csv", require(PUBLIC).read_text().splitlines()[:1])
    out = run(public, "--exchange", "binance", "--symbol", "ETH/USDT")
    assert "trades read 0" in out and "no instrument created" in out
    assert nothing_stored()

    # a file whose every row is bad is the same: counted, nothing stored, no instrument
    lines = member_lines(VISION_1M)[:5]
    lines = [set_field(x, 1, "NaN") for x in lines]
    out = run(write_lines(tmp_path / "all_bad" / "BTCUSDT-1m-2020-01-01.csv", lines))
    assert "read 5, stored 0, skipped 5 (non_finite=5); first bad line: non_finite=1" in out
    assert "no instrument created" in out and nothing_stored()


# -- whatever the damage: a clear outcome, never a traceback, never an impossible candle --------------------
def _damage(rng: random.Random, data: bytes, times: int) -> bytes:
    buf = bytearray(data)
    for _ in range(times):
        at = rng.randrange(len(buf))
        kind = rng.choice(["flip", "insert", "delete", "junk_line"])
        if kind == "flip":
            buf[at] = rng.randrange(256)
        elif kind == "insert":
            buf[at:at] = rng.randbytes(rng.randint(1, 40))
        elif kind == "delete":
            del buf[at:at + rng.randint(1, 80)]
        else:
            buf[at:at] = b"\n" + bytes(rng.choice(b"0123456789,.-eE\x00 abc") for _ in range(60)) + b"\n"
    return bytes(buf)


def test_random_damage_never_a_traceback_and_never_a_wrong_candle(tmp_path):
    lines = member_lines(VISION_1M)
    data = ("\n".join(lines) + "\n").encode()
    truth = {datetime.fromtimestamp(int(x.split(",")[0]) / 1000, tz=UTC): [float(v) for v in x.split(",")[1:6]]
             for x in lines}
    rng = random.Random(2026)
    for case in range(16):
        path = tmp_path / str(case) / "BTCUSDT-1m-2020-01-01.zip"
        path.parent.mkdir()
        in_csv = case % 2 == 0  # even: the CSV is damaged (then zipped, CRC and all); odd: the zip's bytes
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(path.stem + ".csv", _damage(rng, data, rng.randint(1, 6)) if in_csv else data)
        if not in_csv:
            path.write_bytes(_damage(rng, path.read_bytes(), rng.randint(1, 3)))
        symbol = f"C{case}/USDT"
        try:
            out = run(path, "--symbol", symbol)
        except CommandError as exc:
            assert str(exc).startswith(f"{path.name}: refused, ") and "nothing stored" in str(exc), exc
            assert not Candle.objects.filter(instrument__symbol=symbol).exists()
            continue
        assert f"{path.name} [binance_vision] -> binance:{symbol} 1m: read " in out
        for c in Candle.objects.filter(instrument__symbol=symbol):
            bar = [float(c.open), float(c.high), float(c.low), float(c.close), float(c.volume)]
            if not in_csv:  # a zip that still opens passed its CRC check: exactly the real rows
                assert truth[c.open_time] == bar
                continue
            # a damaged CSV can still hold rows that look right; what is stored is never impossible
            assert c.open_time.second == 0 and c.open_time.microsecond == 0, c.open_time  # on the 1m grid
            assert datetime(2009, 1, 3, tzinfo=UTC) <= c.open_time <= datetime.now(UTC)
            assert c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high and c.low > 0
            assert c.volume >= 0 and (c.taker_buy_volume is None or 0 <= c.taker_buy_volume <= c.volume)


def test_pure_loaders_say_which_line_is_bad(tmp_path):
    lines = member_lines(CM_DAY)[:101]
    lines[50] += ",x"
    path = write_lines(tmp_path / "BTCUSD_PERP-aggTrades-2026-05-08.csv", lines)
    loaded = pt.load_agg_trades(path)
    assert len(loaded.frame) == 99 and loaded.skipped == {"wrong_column_count": 1}
    assert loaded.first == {"wrong_column_count": 51}
    assert loaded.lines[:3].tolist() == [2, 3, 4] and 51 not in loaded.lines.tolist()
    assert pt.read_agg_trades(path).equals(loaded.frame)  # the replay feed's loader: the same rows
    with pytest.raises(pt.BadFile, match="truncated"):
        cut = tmp_path / "cut.csv.gz"
        cut.write_bytes(gzip.compress("\n".join(lines).encode())[:-30])
        pt.load_agg_trades(cut)
