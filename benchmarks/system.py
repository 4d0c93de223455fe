"""Cost of the whole system on the real 90-day BTC/USDT 1m file (130 708 bars), three figures:

1. one full decision for one bar, in ms, pure (no DB): every ghost evaluated on its live window (the
   longest warm-up + 1 bar, as apps.runtime.evaluation loads it), the trend gate (trend_state of the same
   window), the manager (arbitrate) with risk_check, and the paper execution math (fill price with
   slippage, stop/target re-anchored, 1e-8 quantisation, fee). Timed at the bars where a ghost drafted
   (the decisions that matter) and at evenly spread bars; median and p90 of each;
2. the full-system backtest (apps.engine.backtest.run_backtest, all five ghosts at defaults) over the
   whole file, in bars/s, split into the ghosts' evaluation and the portfolio walk;
3. with the database: a slice of the file replayed through the real feed task (`run_feed`, source
   `replay:<slice>@0`) into a throwaway SQLite DB with all five ghosts enabled, every closed bar going
   through the ghosts task (Celery eager: run inline), the signal manager, risk and paper execution, as in
   production. The history before the slice (the trend filter's 200 h warm-up) is imported first, so
   the ghosts see a live-sized window. The slice is written to a temp file outside the repository (the
   replay reads files; benchmarks/replay.py replays the whole file).

Usage: .venv/bin/python benchmarks/system.py   (SLICE_BARS=240 by default; SKIP_DB=1 skips part 3)
Data: ../shared/data (or $MARKET_DATA_DIR). The machine is shared: CPU seconds are printed beside wall time.
"""

import gzip
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILE = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
# A slice that holds a spike fader signal (2025-06-13 00:03) and trend filter activity, after 10+ days of
# history, so the decision path (manager, risk, paper fill) runs in the DB replay too.
SLICE_START = "2025-06-12 22:00"


def data_path() -> Path:
    return Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data")) / FILE


def load_bars():
    import pandas as pd

    df = pd.read_csv(data_path())
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), utc=True), name="open_time")
    return df.astype("float64")


def one_decision(bars) -> None:
    import numpy as np

    from apps.engine.backtest import STEP, _ghost_performance
    from apps.engine.exits import rebase_levels
    from apps.engine.fills import fill_model_for
    from apps.engine.manager import Candidate, TrendGate, arbitrate
    from apps.engine.performance import performance_score
    from apps.engine.registry import DESK_KINDS, get_spec, warmup_minutes_for
    from apps.engine.risk import RiskLimits, RiskState, risk_check
    from apps.engine.trend import TrendConfig, trend_state
    from apps.engine.types import Draft

    kinds = list(DESK_KINDS)  # the five desk ghosts (not the lab-only textbook fader)
    cfgs = {k: get_spec(k).config_cls() for k in kinds}
    window = max(warmup_minutes_for(k) for k in kinds) + 1
    model, limits = fill_model_for("binance"), RiskLimits()
    # a record of 20 closed trades per ghost, as the live manager reads one from the ledger per candidate
    rng = np.random.default_rng(7)
    record = [(bars.index[1000 + 500 * j], float(rng.normal(0, 5))) for j in range(20)]
    state = RiskState(equity=10_000.0, day_start_equity=10_000.0, open_positions=0, open_by_ghost={},
                      trades_today=0, kill_switch=False)

    def decide(i: int) -> tuple[float, float, float]:
        w = bars.iloc[i + 1 - window: i + 1]
        t0 = time.perf_counter()
        cands = []
        for gid, k in enumerate(kinds, start=1):
            row = get_spec(k).evaluate(w, cfgs[k]).iloc[-1]
            if int(row["side"]) != 0:
                score = performance_score(_ghost_performance(record, 10_000.0, "1D"))
                cands.append(Candidate(gid, k, Draft.from_row(w.index[-1], row), performance_score=score))
        t1 = time.perf_counter()
        g = trend_state(w, TrendConfig()).iloc[-1]
        gate = TrendGate(allow_long=bool(g["allow_long"]), allow_short=bool(g["allow_short"]),
                         size_mult_long=float(g["size_mult_long"]), size_mult_short=float(g["size_mult_short"]))
        decisions = arbitrate(cands, now_s=w.index[-1].timestamp() + 60, trend=gate,
                              risk=lambda c, m: risk_check(ghost_id=c.ghost_id, entry=c.draft.entry,
                                                           stop=c.draft.stop, size_mult=m, state=state,
                                                           limits=limits))
        # paper execution math for the first candidate (whatever its fate, so every draft bar pays it)
        if cands:
            d, qty = cands[0].draft, next((x.quantity for x in decisions if x.quantity > 0), 0.01)
            px = model.entry_fill(d.side, float(bars["open"].iloc[min(i + 1, len(bars) - 1)]))
            stop, target = rebase_levels(d.entry, d.stop, d.target, px)
            q = Decimal(repr(qty)).quantize(STEP)
            _ = (Decimal(repr(px)).quantize(STEP), Decimal(repr(model.fee(px * float(q)))).quantize(STEP),
                 stop, target)
        t2 = time.perf_counter()
        return (t2 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3

    from apps.engine.backtest import default_ghosts, evaluate_ghosts

    drafts = evaluate_ghosts(bars, default_ghosts())
    draft_bars = sorted({int(p) for d in drafts.values() for p in np.flatnonzero(d["side"].to_numpy() != 0)
                         if p >= window})
    spread = list(np.linspace(window, len(bars) - 1, 25).astype(int))
    decide(spread[0])  # warm caches/imports
    for label, where in (("bars with a draft", draft_bars), ("evenly spread bars", spread)):
        c0 = time.process_time()
        runs = [decide(i) for i in where]
        cpu = (time.process_time() - c0) / len(runs) * 1e3
        tot = sorted(r[0] for r in runs)
        print(f"one full decision ({label}, n={len(runs)}, window {window} bars): median "
              f"{statistics.median(tot):.1f} ms, p90 {tot[int(0.9 * (len(tot) - 1))]:.1f} ms "
              f"(ghosts {statistics.median(r[1] for r in runs):.1f} ms + gate/manager/risk/fill "
              f"{statistics.median(r[2] for r in runs):.2f} ms), CPU {cpu:.1f} ms/decision")


def backtest_throughput(bars) -> None:
    from apps.engine.backtest import default_ghosts, evaluate_ghosts, run_backtest

    n = len(bars)
    walls, cpus, evals = [], [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_backtest(bars)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        t0 = time.perf_counter()
        drafts = evaluate_ghosts(bars, default_ghosts())
        evals.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run_backtest(bars, drafts=drafts)
    walk = time.perf_counter() - t0
    best = min(walls)
    print(f"full-system backtest, no DB ({n} bars, 5 ghosts, {len(res.trades)} trades, "
          f"{len(res.fates)} drafts decided): best {best:.2f} s = {n / best:,.0f} bars/s, median "
          f"{n / statistics.median(walls):,.0f} bars/s, CPU {min(cpus):.2f} s; ghosts' evaluation "
          f"{min(evals):.2f} s, trend gate + walk {walk:.2f} s ({n / walk:,.0f} bars/s)")


def _redis() -> tuple[subprocess.Popen, str]:
    from tests.conftest import free_port, redis_binary, wait_for_port

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen([redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    wait_for_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def db_replay(bars) -> None:
    import pandas as pd

    slice_bars = int(os.environ.get("SLICE_BARS", "240"))
    start = bars.index.get_loc(pd.Timestamp(SLICE_START, tz="UTC"))
    warm = 12_151 + 60  # the longest live window (liquidation hunter) + an hour
    proc, url = _redis()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.update(SQLITE_PATH=str(Path(tmp) / "bench.sqlite3"), DEBUG="1", REDIS_URL=url,
                              DJANGO_SETTINGS_MODULE="hftweb.settings")
            os.environ.pop("DATABASE_URL", None)
            # the slice as a freqtrade CSV, lines copied verbatim from the real file
            with gzip.open(data_path(), "rt") as f:
                lines = f.readlines()
            slice_path = Path(tmp) / "BTCUSDT-1m-slice.csv"
            slice_path.write_text(lines[0] + "".join(lines[1 + start: 1 + start + slice_bars]))
            import django

            django.setup()
            from django.core.management import call_command
            from django.db.models import Count

            call_command("migrate", verbosity=0)
            from apps.engine.registry import DESK_KINDS
            from apps.ghosts.services import ghost_create
            from apps.market import importers
            from apps.market.models import Candle, FeedStatus
            from apps.market.services import candles_import, instrument_ensure
            from apps.runtime.tasks import run_feed
            from apps.signals.models import Signal
            from apps.trading.models import Position
            from hftweb.celery import app

            app.conf.task_always_eager = True  # the ghosts task runs inline after each bar, like one worker
            logging.getLogger("celery").setLevel(logging.WARNING)  # one INFO line per bar otherwise
            inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
            frame = importers.read_klines(data_path())
            hist = frame[(frame["open_time"] >= bars.index[start - warm]) & (frame["open_time"] < bars.index[start])]
            candles_import(instrument=inst, frame=hist.reset_index(drop=True), timeframe="1m")
            for kind in DESK_KINDS:
                ghost_create(name=kind, kind=kind, instrument=inst, enabled=True)
            FeedStatus.objects.create(instrument=inst, source=f"replay:{slice_path}@0")
            before = Candle.objects.filter(instrument=inst).count()
            t0, c0 = time.perf_counter(), time.process_time()
            state = run_feed(inst.pk)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            stored = Candle.objects.filter(instrument=inst).count() - before
            fates = dict(Signal.objects.values_list("fate").annotate(n=Count("id")).order_by())
            for sig in Signal.objects.select_related("ghost").order_by("bar_time"):
                print(f"  signal {sig.ghost.name} {sig.side} bar {sig.bar_time:%Y-%m-%d %H:%M}: {sig.fate} "
                      f"({sig.fate_detail})")
            print(f"full-system replay WITH DB (SQLite, Redis, Celery eager; run_feed replay:{slice_path.name}@0, "
                  f"{stored} bars from {SLICE_START} after {len(hist)} bars of history, 5 ghosts): {state}; "
                  f"{wall:.1f} s wall / {cpu:.1f} s CPU = {stored / wall:,.1f} bars/s; signals {fates}, "
                  f"positions {Position.objects.count()}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def main() -> None:
    bars = load_bars()
    print(f"load average {os.getloadavg()[0]:.1f} (2 shared cores)")
    one_decision(bars)
    backtest_throughput(bars)
    if os.environ.get("SKIP_DB"):
        print("full-system replay with DB: skipped (SKIP_DB)")
        return
    if not (ROOT / "apps" / "market" / "replay_feed.py").is_file():
        print("full-system replay with DB: apps/market/replay_feed.py is missing")
        return
    db_replay(bars)


if __name__ == "__main__":
    main()
