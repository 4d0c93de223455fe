"""Cost of `import_market_data` on the real data kit, into a throwaway SQLite DB.

Creates a throwaway SQLite DB (SQLITE_PATH in a temp dir, DEBUG=1), migrates it, then times:
1. the 90-day BTC/USDT 1m freqtrade file (130 708 rows): parse + store, first import and re-import;
2. the COIN-M BTCUSD_PERP aggTrades day (105 280 trades): parse, aggregation alone (live Sanitiser +
   BarBuilder, trades/s) and the whole command (parse + aggregate + store candles and large trades);
3. the four forceOrder liquidation recordings (6 701 rows) with every symbol (--liq-symbols all).
Prints one line of figures per step.
Usage: .venv/bin/python benchmarks/bench_import.py
Data: ../shared/data (or $MARKET_DATA_DIR).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILE = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
AGG = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"


def main() -> None:
    data = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    path = data / FILE
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SQLITE_PATH"] = str(Path(tmp) / "bench.sqlite3")
        os.environ["DEBUG"] = "1"
        os.environ.pop("DATABASE_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from apps.market import importers
        from apps.market.services import candles_import, instrument_ensure

        inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
        runs = []
        for _ in range(2):
            t0, c0 = time.perf_counter(), time.process_time()
            frame = importers.read_klines(path)
            report = candles_import(instrument=inst, frame=frame, timeframe="1m")
            runs.append((report, time.perf_counter() - t0, time.process_time() - c0))
        (first, t1, c1), (again, t2, c2) = runs
        # CPU seconds of this process beside the wall time: the 2-core machine is shared, wall time swings
        print(
            f"import_market_data {path.name}: rows {first.read}; first import stored {first.stored} in {t1:.2f}s "
            f"wall / {c1:.2f}s CPU ({first.read / t1:,.0f} rows/s); re-import stored {again.stored} in {t2:.2f}s "
            f"wall / {c2:.2f}s CPU ({again.read / t2:,.0f} rows/s); load average {os.getloadavg()[0]:.1f}"
        )
        trades_and_liquidations(data)


def trades_and_liquidations(data: Path) -> None:
    from io import StringIO

    from django.core.management import call_command

    from apps.market import importers
    from apps.market import parsers_trades as pt

    agg = data / AGG
    t0 = time.perf_counter()
    trades = pt.read_agg_trades(agg)
    t_parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    built = importers.bars_from_trades(trades)
    t_agg = time.perf_counter() - t0
    print(
        f"aggTrades {agg.name}: {len(trades)} trades; parse {t_parse:.2f}s ({len(trades) / t_parse:,.0f} trades/s); "
        f"aggregation (Sanitiser + BarBuilder) {t_agg:.2f}s = {len(trades) / t_agg:,.0f} trades/s "
        f"-> {len(built.bars)} bars, {len(built.large)} large trades"
    )
    for label in ("first", "re-import"):
        out = StringIO()
        t0 = time.perf_counter()
        call_command("import_market_data", str(agg), stdout=out)
        dt = time.perf_counter() - t0
        stored = out.getvalue().split("bars built ")[1].split(";")[0]
        print(f"import_market_data {agg.name} ({label}): {dt:.2f}s = {len(trades) / dt:,.0f} trades/s; bars {stored}")
    liqs = sorted((data / "liquidations").glob("*.csv"))
    rows = sum(len(pt.read_liquidations(p)) for p in liqs)
    for label in ("first", "re-import"):
        out = StringIO()
        t0 = time.perf_counter()
        call_command("import_market_data", *map(str, liqs), "--liq-symbols", "all", stdout=out)
        dt = time.perf_counter() - t0
        stored = sum(int(line.split(", stored ")[1].split(",")[0]) for line in out.getvalue().splitlines())
        print(
            f"import_market_data {len(liqs)} liquidation recordings ({label}, all symbols): {rows} rows, "
            f"stored {stored}, {dt:.2f}s = {rows / dt:,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
