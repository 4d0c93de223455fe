"""A walk-forward parameter study of the spike fader over the whole real 90-day BTC/USDT 1m file, through real
Celery worker processes on the `research` queue, with 1 and 2 worker processes (issue 10, "Speed": the
whole study under 60 s on this 2-core machine).

The study: 5 rolling folds (train 30 days, test 12 days: 30 + 5 x 12 = 90 days), the spike fader's default
search space (its 11 numeric parameters, 0.5x..2x their defaults within their bounds), objective Sharpe with at
least 5 trades per window, TPE seeded, batches of 8, the desk's defaults for the rest. The budget: "a
200-trial, 5-fold study" is read both ways and both are run:
- 200 trials PER FOLD (1,000 trials: what `budget_trials` means in a study's settings), the headline;
- 200 trials in TOTAL (40 per fold).

Setup (not timed): a throwaway SQLite DB (WAL, as `make run`) migrated and filled with the file through the
import service, a redis-server on a free port (broker + channel layer). Timed: from `study_create` (the study
queued) to status done with its results stored, workers already up (each worker process loads the bars and
builds its TrialContext on its first trial: inside the timing). Then, on the side, what a trial and a step
cost in-process (the same code without Celery and the database), to say what dominates.

Usage: .venv/bin/python benchmarks/optimize.py [--processes 1,2] [--budgets per-fold,total]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.throwaway import throwaway_desk  # noqa: E402 - after the path

FILE = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
FOLDS, TRAIN_DAYS, TEST_DAYS = 5, 30, 12
BUDGETS = {"per-fold": 200, "total": 200 // FOLDS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--budgets", default="per-fold,total")
    args = ap.parse_args()
    data = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    with throwaway_desk() as tmp:
        run_bench(data / FILE, [int(x) for x in args.processes.split(",")], args.budgets.split(","), tmp)


def start_workers(n: int, tmp: Path) -> list[subprocess.Popen]:
    """n worker instances of one pool process each (what `docker compose up --scale worker=n` starts)."""
    from hftweb.celery import app

    procs = []
    for i in range(n):
        log = open(tmp / f"worker{i}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hftweb", "worker", "-n", f"bench{i}@%h", "-Q", "research", "-c",
             "1", "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 60
    while len(app.control.ping(timeout=0.5) or []) < n:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not come up: " + (tmp / "worker0.log").read_text()[-2000:])
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    import signal

    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


def settings_for(inst, trials: int) -> dict:
    return {"instrument_id": inst.pk, "start": "2025-05-20", "end": "2025-08-18T18:28", "target": "spike_fader",
            "objective": "sharpe", "min_trades": 5, "scheme": "rolling", "train_days": TRAIN_DAYS,
            "test_days": TEST_DAYS, "sampler": "tpe", "seed": 1, "budget_trials": trials, "batch_size": 8}


def run_bench(path: Path, processes: list[int], budgets: list[str], tmp: Path) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.market.importers import read_klines
    from apps.market.services import candles_import, instrument_ensure
    from apps.research.models import Study, Trial
    from apps.research.services import study_create

    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    t = time.perf_counter()
    n = candles_import(instrument=inst, frame=read_klines(path)).stored
    print(f"setup: {n:,} candles imported in {time.perf_counter() - t:.1f} s (not timed below)")
    print(f"study: spike fader, {FOLDS} rolling folds (train {TRAIN_DAYS} d, test {TEST_DAYS} d), default space "
          "(11 params), TPE seed 1, batches of 8, objective Sharpe, min 5 trades/window")
    rows = []
    last = None
    for budget in budgets:
        per_fold = BUDGETS[budget]
        for n_proc in processes:
            workers = start_workers(n_proc, tmp)
            try:
                t0 = time.perf_counter()
                study = study_create(actor=None, settings=settings_for(inst, per_fold))
                while True:
                    study = Study.objects.get(pk=study.pk)
                    if not study.is_active:
                        break
                    time.sleep(0.05)
                wall = time.perf_counter() - t0
            finally:
                stop_workers(workers)
            if study.status != "done":
                raise RuntimeError(f"study {study.pk} {study.status}: {study.error}")
            trials = list(Trial.objects.filter(study=study).values_list("started_at", "finished_at", "status"))
            busy = sum((f - s).total_seconds() for s, f, _ in trials if s and f)
            total = len(trials)
            oos = {f["key"]: f["value"] for f in study.results["oos"]["figures"]}
            chosen = [f["is_value"] for f in study.results["folds"]]
            rows.append((budget, per_fold, n_proc, total, wall, busy))
            spans = sorted((st_, fi) for st_, fi, _ in trials if st_ and fi)
            gaps = [(b[0] - a[1]).total_seconds() for a, b in zip(spans, spans[1:], strict=False)]
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"\n{budget} budget ({per_fold}/fold, {total} trials), {n_proc} worker process(es): "
                  f"wall {wall:.1f} s, {total / wall:.1f} trials/s; trial tasks busy {busy:.1f} s "
                  f"({busy / total * 1000:.0f} ms each, {busy / (wall * n_proc):.0%} of the processes' wall); "
                  f"load average {load}")
            print(f"  {sum(1 for *_, st in trials if st == 'infeasible')} infeasible; chosen train Sharpe per fold "
                  f"{', '.join('n/a' if v is None else f'{v:.2f}' for v in chosen)}; OOS Sharpe "
                  f"{oos['sharpe'] if oos['sharpe'] is None else round(oos['sharpe'], 2)}, OOS return "
                  f"{oos['return_pct']:.2f} %, DSR {study.results['dsr'].get('probability')}, "
                  f"PBO {study.results['pbo'].get('value')}")
            if n_proc == 1 and gaps:
                g = sorted(gaps)
                med = statistics.median(g)
                print(f"  between two trials of the one process: median {med * 1000:.1f} ms (the task round trip), "
                      f"90th percentile {g[int(len(g) * 0.9)] * 1000:.0f} ms, total {sum(g):.1f} s; beyond the "
                      f"round trips, the steps after each batch: ~{sum(g) - med * len(g):.1f} s")
            if last is None or total > Trial.objects.filter(study=last).count():
                last = study
    print("\nsummary:")
    for budget, _per_fold, n_proc, total, wall, _busy in rows:
        print(f"  {budget:<9} {total:>5} trials  {n_proc} process(es)  wall {wall:6.1f} s  "
              f"{total / wall:6.1f} trials/s")
    if last is not None:
        breakdown(last)


def breakdown(study) -> None:
    """In-process costs of the same study's pieces (no Celery, no database writes): one trial's engine run, the
    driver's rebuild + ask of a batch at a fold's final size, and the results."""
    from datetime import timedelta

    from apps.lab.selectors import run_bars
    from apps.lab.services import backtest_inputs
    from apps.research import services as sv
    from apps.research.models import Trial
    from apps.research.results import study_results

    s = study.settings
    t = time.perf_counter()
    bars = run_bars(instrument_id=study.instrument_id, start=study.start - timedelta(minutes=s["warmup_minutes"]),
                    end=study.end)
    load = time.perf_counter() - t
    setups, cfg = backtest_inputs(s, exchange="binance")
    t = time.perf_counter()
    ctx = sv.TrialContext(bars, setups, cfg, searched=[1])
    build = time.perf_counter() - t
    params = list(Trial.objects.filter(study=study, status="done").values_list("params", flat=True)[:60])
    times = []
    for p in params:
        t = time.perf_counter()
        sv.run_trial(ctx, p).scores([], s["objective"], s["min_trades"])
        times.append(time.perf_counter() - t)
    finished = list(Trial.objects.filter(study=study, fold=0).order_by("number"))
    t = time.perf_counter()
    sv._ask(s, 0, finished[-1].batch + 1, finished, s["batch_size"])
    ask_full = time.perf_counter() - t
    t = time.perf_counter()
    sv._ask(s, 0, 1, finished[:s["batch_size"]], s["batch_size"])
    ask_small = time.perf_counter() - t
    t = time.perf_counter()
    study_results(study)
    res = time.perf_counter() - t
    n = len(Trial.objects.filter(study=study))
    batches = n // s["batch_size"]
    eng = statistics.median(times)
    print(f"\nwhere the time goes (in-process, the {n}-trial study: {batches} batches):")
    print(f"  per worker process once: load {len(bars):,} bars {load:.2f} s + TrialContext {build:.2f} s")
    print(f"  engine per trial (run_trial, median of {len(times)}): {eng * 1000:.0f} ms -> {n * eng:.1f} s of CPU")
    print(f"  driver per batch of {s['batch_size']} (rebuild the fold's optuna study + TPE asks): "
          f"{ask_small * 1000:.0f} ms at {s['batch_size']} trials, {ask_full * 1000:.0f} ms at {len(finished)} "
          f"-> ~{batches * (ask_small + ask_full) / 2:.1f} s of CPU, serialised per study")
    print(f"  results (importance, DSR, PBO over {n} trials): {res:.2f} s, once")


if __name__ == "__main__":
    main()
