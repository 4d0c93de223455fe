"""Throughput of `download_history` through ccxt's real binance code against a local server (127.0.0.1)
serving the real data.binance.vision BTCUSDT 1m rows of 2020-01-01..03 (4 320 candles) as /api/v3/klines.

Creates a throwaway SQLite DB (SQLITE_PATH in a temp dir, DEBUG=1), migrates it, then times a full
download (1000 candles per request, ccxt's rate limiter off: the figure is our cost + ccxt + local HTTP,
not Binance's limits), and a rerun that finds nothing missing. Prints one line of figures.
Usage: .venv/bin/python benchmarks/bench_history_download.py
Data: ../shared/data (or $MARKET_DATA_DIR).
"""

import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SQLITE_PATH"] = str(Path(tmp) / "bench.sqlite3")
        os.environ["DEBUG"] = "1"
        os.environ.pop("DATABASE_URL", None)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from django.test.utils import override_settings

        # no Redis here: progress pushes go to an in-memory channel layer (what a push costs stays in)
        override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}).enable()
        from apps.market import history
        from apps.market.history_services import history_download_create, history_download_run
        from tests.market.fake_exchange import FakeBinanceRest, vision_klines

        since, until = datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 4, tzinfo=UTC)
        runs = []
        with FakeBinanceRest(vision_klines()) as server:
            for _ in range(2):
                ex = history.exchange_create("binance", urls=server.urls(), config={"enableRateLimit": False})
                row = history_download_create(exchange_code="binance", symbol="BTC/USDT", timeframe="1m",
                                              since=since, until=until)
                before = len(server.requests)
                t0 = time.perf_counter()
                row = history_download_run(download_id=row.pk, exchange=ex, limit=1000)
                runs.append((row, time.perf_counter() - t0, len(server.requests) - before))
        (first, t1, n1), (again, t2, n2) = runs
        assert first.state == again.state == "done" and first.stored == 4320 and again.stored == 0
        print(
            f"download_history binance BTC/USDT 1m 2020-01-01..04 from 127.0.0.1: {first.fetched} candles in {n1} "
            f"requests (markets + klines), stored {first.stored} in {t1:.2f}s ({first.fetched / t1:,.0f} candles/s); "
            f"rerun fetched {again.fetched} with {n2} requests in {t2 * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
