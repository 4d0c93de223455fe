"""Replay rate through the database (issue 13): the real 90-day BTC/USDT 1m kline file replayed at @max by the
real feed task (`run_feed`, source `replay:<file>@max`) into a throwaway SQLite database, with the desk's five
ghosts enabled: every bar stored, every draft a signal with its fate, every entry and exit an order, a fill and
a position, as in production. Celery runs eagerly (no worker: a replay decides in-process anyway); Redis is a
private redis-server.

Prints bars/s (wall and CPU), the signals by fate, the positions, and os.getloadavg() before and after (the
machine is shared: read the figure with the load). A check at the end compares the replay's closed trades with
the pure backtest of the same bars (`apps.engine.backtest.run_backtest`, the desk's five ghosts at defaults).

Usage: .venv/bin/python benchmarks/replay.py            (whole file, 130,708 bars)
       BARS=20000 .venv/bin/python benchmarks/replay.py (the file's first 20,000 bars)
       SPEED=600 MAX_SECONDS=20 .venv/bin/python benchmarks/replay.py (a paced replay for 20 s)
       FILE=trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip CHECK=0 \
           .venv/bin/python benchmarks/replay.py (a trade replay: bars built from trades, on its own market)
       BENCH_DATABASE_URL=postgres://... (an empty database) for PostgreSQL instead of the temp SQLite file
Data: ../shared/data (or $MARKET_DATA_DIR).
"""

import gzip
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILE = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"


def data_path() -> Path:
    return Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data")) / os.environ.get("FILE", FILE)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    from benchmarks.system import _redis

    bars_limit = int(os.environ.get("BARS", "0"))
    speed = os.environ.get("SPEED", "max")
    max_seconds = float(os.environ["MAX_SECONDS"]) if os.environ.get("MAX_SECONDS") else None
    proc, url = _redis()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = data_path()
            if bars_limit:
                with gzip.open(src, "rt") as f:
                    lines = [next(f) for _ in range(bars_limit + 1)]
                src = Path(tmp) / f"BTCUSDT-1m-first-{bars_limit}.csv"
                src.write_text("".join(lines))
            os.environ.update(SQLITE_PATH=str(Path(tmp) / "bench.sqlite3"), DEBUG="1", REDIS_URL=url,
                              DJANGO_SETTINGS_MODULE="hftweb.settings", RUN_DIR=tmp,
                              HFT_REPLAY_WARMUP_DOWNLOAD="0")  # the file's own head: comparable with its backtest
            os.environ.pop("DATABASE_URL", None)
            if os.environ.get("BENCH_DATABASE_URL"):  # an EMPTY PostgreSQL database instead of the temp SQLite file
                os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connection
            from django.db.models import Count

            call_command("migrate", verbosity=0)
            from apps.engine.registry import DESK_KINDS
            from apps.ghosts.services import ghost_create
            from apps.market.models import Candle, FeedStatus
            from apps.market.services import instrument_ensure
            from apps.runtime.tasks import run_feed
            from apps.signals.models import Signal
            from apps.trading.models import Fill, Order, Position
            from hftweb.celery import app

            app.conf.task_always_eager = True
            logging.getLogger("celery").setLevel(logging.WARNING)
            from apps.market.replay_feed import replay_market

            market = replay_market(f"replay:{src}") or ("binance", "BTC/USDT")
            inst = instrument_ensure(exchange_code=market[0], symbol=market[1])
            for kind in DESK_KINDS:
                ghost_create(name=kind, kind=kind, instrument=inst, enabled=True)
            FeedStatus.objects.create(instrument=inst, source=f"replay:{src}@{speed}")
            load_before = load()
            t0, c0 = time.perf_counter(), time.process_time()
            state = run_feed(inst.pk, max_seconds=max_seconds)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            stored = Candle.objects.filter(instrument=inst).count()
            fates = dict(Signal.objects.values_list("fate").annotate(n=Count("id")).order_by())
            print(f"replay {src.name} @{speed} on {inst} through run_feed ({connection.vendor}, Redis, 5 ghosts): "
                  f"{state}; "
                  f"{stored:,} bars stored in {wall:.1f} s wall / {cpu:.1f} s CPU = {stored / wall:,.0f} bars/s "
                  f"({stored / cpu:,.0f} per CPU second)")
            if speed != "max":
                print(f"  paced @{speed}: {stored} bars in {max_seconds or wall:.0f} s of replay, "
                      f"{float(speed) / 60:.1f} bars/s expected (the file's load not counted)")
            print(f"  signals {sum(fates.values())} by fate {fates}; positions {Position.objects.count()} "
                  f"(closed {Position.objects.filter(status='closed').count()}), orders {Order.objects.count()}, "
                  f"fills {Fill.objects.count()}")
            print(f"  load average before {load_before}, after {load()} (2 shared cores)")
            if os.environ.get("CHECK", "1") == "1" and speed == "max" and max_seconds is None:
                compare_with_backtest(src, inst)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def compare_with_backtest(src: Path, inst) -> None:
    """The replay's closed trades against the pure backtest of the same bars with the same ghosts."""
    from decimal import Decimal

    import pandas as pd
    from django.conf import settings

    from apps.engine.backtest import BacktestConfig, GhostSetup, run_backtest
    from apps.ghosts.models import Ghost
    from apps.market.importers import read_klines
    from apps.trading.models import Position

    bars = read_klines(src).set_index("open_time")
    setups = [GhostSetup(ghost_id=g.pk, name=g.name, kind=g.kind, config=g.params)
              for g in Ghost.objects.filter(instrument=inst).order_by("id")]
    bt = run_backtest(bars, setups, BacktestConfig(start_capital=settings.HFT_START_CAPITAL, exchange="binance"))

    def px(x) -> Decimal:
        return Decimal(x).quantize(Decimal("0.000001"))

    replay = [(pd.Timestamp(p.signal.bar_time), p.side, p.exit_reason, px(p.entry_price), px(p.exit_price))
              for p in Position.objects.filter(instrument=inst, status="closed").order_by("opened_at")]
    backtest = [(t.signal_time, "long" if t.side > 0 else "short", t.reason, px(t.entry_price), px(t.exit_price))
                for t in bt.trades if t.reason != "end_of_data"]
    same = replay == backtest
    first_diff = next((i for i, (a, b) in enumerate(zip(replay, backtest, strict=False)) if a != b), None)
    print(f"  backtest of the same bars: {len(backtest)} closed trades, replay {len(replay)}: "
          f"{'same trades' if same else f'DIFFERENT (first at #{first_diff})'}")


if __name__ == "__main__":
    main()
