"""What one run of the protective-stop watch costs (issue 13, apps/trading/live_watch.py; beat runs it every 30 s).

Setup (not timed): a throwaway SQLite DB (WAL, as `make run`), a redis-server on a free port (the watch's lock,
the per-position guards, the alert queue), live trading on against the local fake Binance spot server in this
process (tests/trading/fake_binance.py, ccxt's real binance class over HTTP on 127.0.0.1), and N live positions
opened through the real execution path (N ghosts on BTC/USDT, one position each, each with its stop resting).

Timed, per N: `protect_watch()` with every stop in step (the usual run: one order lookup per position), median of
REPEATS runs; then once with every stop cancelled by hand on the exchange (one lookup, a balance read, the
commission lookup and a placement per position). Printed with os.getloadavg(). The figures are the fake's round
trips, not the watch's work: a profile shows ~90 % of a run waiting in recv for the fake (about 40 ms per request
on loopback here: the fake writes headers and body apart, so Nagle meets delayed ACK), the rest is Redis, SQLite
and ccxt. Against Binance a run costs about one request round trip (20-100 ms) per live position.

Usage: .venv/bin/python benchmarks/protect_watch.py [REPEATS=5]   (BENCH_SIZES=1,10,50 by default)
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.throwaway import throwaway_desk  # noqa: E402 - after the path

SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "1,10,50").split(","))


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with throwaway_desk(HFT_LIVE_TRADING="1"):
        run_bench(repeats)


def run_bench(repeats: int) -> None:
    import django

    django.setup()
    from decimal import Decimal

    from django.conf import settings
    from django.core.management import call_command

    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, FeedStatus, Instrument
    from apps.trading.execution import signal_execute
    from apps.trading.live_client import live_clients_clear
    from apps.trading.live_watch import protect_watch
    from tests.trading.conftest import PRICE, T0, new_signal
    from tests.trading.fake_binance import API_KEY, API_SECRET, FakeBinanceSpot

    call_command("migrate", verbosity=0)
    os.environ["HFT_BINANCE_API_KEY"], os.environ["HFT_BINANCE_SECRET"] = API_KEY, API_SECRET
    ex = Exchange.objects.create(code="binance", name="Binance")
    inst = Instrument.objects.create(exchange=ex, symbol="BTC/USDT", base="BTC", quote="USDT")
    FeedStatus.objects.create(instrument=inst, source="sim")
    with FakeBinanceSpot(price=PRICE) as fake:
        settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake.urls()}, "enableRateLimit": False}
        live_clients_clear()
        opened = 0
        print(f"protect_watch(): live positions on the fake Binance spot, median of {repeats} runs")
        for n in SIZES:
            while opened < n:
                ghost = ghost_create(name=f"fader-{opened}", kind="spike_fader", instrument=inst, enabled=True)
                signal = new_signal(ghost, opened)
                assert signal_execute(signal_id=signal.pk, price=PRICE, at=T0, quantity=0.01) is not None
                opened += 1
            runs = []
            for _ in range(repeats):
                t = time.perf_counter()
                counts = protect_watch()
                runs.append(time.perf_counter() - t)
                assert counts == {"kept": n}, counts
            for o in fake.orders:  # every stop cancelled by hand on the exchange
                if o["type"].startswith("STOP_LOSS") and o["status"] == "NEW":
                    with fake._lock:
                        fake._cancel_order({"symbol": "BTCUSDT", "origClientOrderId": o["clientOrderId"]})
            t = time.perf_counter()
            counts = protect_watch()
            replace = time.perf_counter() - t
            assert counts == {"placed": n}, counts
            kept = statistics.median(runs)
            print(f"  N={n:3d}: all in step {kept * 1000:7.1f} ms/run ({kept / n * 1000:5.1f} ms/position); "
                  f"all re-placed {replace * 1000:7.1f} ms ({replace / n * 1000:5.1f} ms/position); "
                  f"exchange requests so far {len(fake.requests)}; load {os.getloadavg()}")
        live_clients_clear()
    assert Decimal(fake.balances["BTC"]) > 0


if __name__ == "__main__":
    main()
