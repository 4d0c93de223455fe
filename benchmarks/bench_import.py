"""Cost of `import_market_data` on the real 90-day BTC/USDT 1m freqtrade file (130 708 rows) into SQLite.

Creates a throwaway SQLite DB (SQLITE_PATH in a temp dir, DEBUG=1), migrates it, then times the parse +
store of a first import and of a re-import (which must store nothing). Prints one line of figures.
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


def main() -> None:
    path = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data")) / FILE
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
        from apps.market.management.commands.import_market_data import instrument_ensure
        from apps.market.services import candles_import

        inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            frame = importers.read_klines(path)
            report = candles_import(instrument=inst, frame=frame, timeframe="1m")
            runs.append((report, time.perf_counter() - t0))
        (first, t1), (again, t2) = runs
        print(
            f"import_market_data {path.name}: rows {first.read}; first import stored {first.stored} in {t1:.2f}s "
            f"({first.read / t1:,.0f} rows/s); re-import stored {again.stored} in {t2:.2f}s "
            f"({again.read / t2:,.0f} rows/s)"
        )


if __name__ == "__main__":
    main()
