"""The Instruments page (issue 11) with a big exchange's markets cached: parse time of the cache, page p50/p95, the
cost of adding an instrument.

Usage:
    .venv/bin/python benchmarks/instruments_page.py [--markets 3500] [--instruments 20] [--n 30]

The market listing is ccxt's own parse of a Binance exchangeInfo served on 127.0.0.1 (tests/market/fake_exchange.py,
one real-shaped BTCUSDT entry), copied `--markets` times under made-up symbols (X0001/USDT, ...): Binance spot lists
about 3,500 markets, and no recording of the full listing is in the data kit, so the SIZE is real-shaped and the
symbols are not. Everything in-process through Django's test client on a fresh SQLite file, as a logged-in
operator, after 3 warm-up requests; figures with the 1-minute load average (the machine is shared).
"""

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pages import load, start_redis  # noqa: E402  (benchmarks/pages.py: a throwaway redis-server)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", type=int, default=3500)
    ap.add_argument("--instruments", type=int, default=20)
    ap.add_argument("--n", type=int, default=30)
    a = ap.parse_args()

    redis_proc, redis_url = start_redis()
    run_dir = tempfile.mkdtemp(prefix="instruments-bench-")
    os.environ.update({"DATABASE_URL": f"sqlite:///{run_dir}/db.sqlite3", "REDIS_URL": redis_url, "DEBUG": "0",
                       "RUN_DIR": run_dir, "DJANGO_SETTINGS_MODULE": "hftweb.settings"})
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    if not os.environ.get("HFT_SECRETS_KEY"):
        from cryptography.fernet import Fernet

        os.environ["HFT_SECRETS_KEY"] = Fernet.generate_key().decode()
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.test import Client

        from apps.accounts.services import user_ensure
        from apps.ghosts.services import ghost_create
        from apps.market import markets as mk
        from apps.market.services import instrument_add
        from tests.market.fake_exchange import FakeBinanceRest

        call_command("migrate", verbosity=0)
        user, _ = user_ensure(username="bench", role="operator", password=secrets.token_urlsafe(20))

        with FakeBinanceRest([]) as server:
            one = mk.markets_fetch("binance", config={"urls": {"api": server.urls()}, "enableRateLimit": False})
        btc = one.market("BTC/USDT")
        many = {"BTC/USDT": btc}
        for i in range(a.markets - 1):
            base = f"X{i:04d}"
            many[f"{base}/USDT"] = {**btc, "symbol": f"{base}/USDT", "id": f"{base}USDT", "base": base,
                                    "baseId": base}
        mk.markets_store("binance", many, precision_mode=one.precision_mode)
        size = mk.markets_cache_path("binance").stat().st_size
        mk._PARSED.clear()
        t = time.perf_counter()
        mk.markets_cached("binance")
        cold = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        mk.markets_cached("binance")
        warm = (time.perf_counter() - t) * 1000
        print(f"markets cache: {len(many)} markets, {size / 1e6:.1f} MB; parse {cold:.0f} ms cold, {warm:.3f} ms "
              f"once parsed ({load()})")

        adds = []
        for i in range(a.instruments):
            symbol = "BTC/USDT" if i == 0 else f"X{i:04d}/USDT"
            t = time.perf_counter()
            inst, _ = instrument_add(exchange_code="binance", symbol=symbol, actor=user)
            adds.append((time.perf_counter() - t) * 1000)
            for k, kind in enumerate(("spike_fader", "trend_filter", "whale_follower")):
                ghost_create(name=f"{kind}-{i}-{k}".replace("_", "-"), kind=kind, instrument=inst)
        print(f"instrument_add: p50 {statistics.median(adds):.1f} ms, max {max(adds):.1f} ms over {len(adds)} "
              f"({load()})")

        client = Client()
        client.force_login(user)
        for url in ("/instruments/", "/instruments/?exchange=kraken"):
            for _ in range(3):
                r = client.get(url)
            times = []
            for _ in range(a.n):
                t = time.perf_counter()
                r = client.get(url)
                times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.status_code
            what = "with the 3,500-symbol picker" if "kraken" not in url else "no markets cached for kraken"
            print(f"GET {url:32s} p50 {statistics.median(times):6.1f} ms  p95 {pct(times, 0.95):6.1f} ms  "
                  f"{len(r.content) / 1e3:.0f} kB  ({what}; {a.instruments} instruments, {3 * a.instruments} "
                  f"ghosts; {load()})")
    finally:
        redis_proc.terminate()
        redis_proc.wait()


if __name__ == "__main__":
    main()
