"""What one trial of a parameter study costs in the pure engine (apps.engine.trial), on the real 90-day BTC/USDT 1m
file (130,708 bars), with and without the TrialContext caches (validated bars, shared trend/CVD states, the drafts
of the ghosts not searched).

The spike fader is searched over 60 random points of its default space (seeded) plus its defaults, as a study
would: lab switches auto_disable and kill_switch off, trading from the second day (the first is warm-up), each
run scored on 5 rolling folds (train 30 days, test 10). Two ghost sets: the fader alone, and the fader behind the
trend gate (the trend ghost fixed at its defaults). Each feasible point is run with the caches on and off,
interleaved, and timed in CPU time (time.process_time: the machine is shared), best of N; printed: the median and
mean over the points, the costliest point, an infeasible point and the 5-fold scores.

Usage: .venv/bin/python benchmarks/wf_trial.py [runs]   (default 5)
"""

import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from apps.engine.backtest import BacktestConfig, GhostSetup  # noqa: E402
from apps.engine.search_space import default_space, suggest  # noqa: E402
from apps.engine.trial import TrialContext, run_trial  # noqa: E402
from apps.engine.walkforward import make_folds  # noqa: E402
from benchmarks.ghosts import load  # noqa: E402


def best_cpu(fn, runs: int) -> float:
    out = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return min(out)


def main(runs: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bars = load()
    start = bars.index[0].floor("D") + pd.Timedelta(days=1)
    cfg = BacktestConfig(trade_from=start, auto_disable=False, kill_switch=False)
    folds = make_folds(start, bars.index[-1], scheme="rolling", train_days=30, test_days=10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    points: list[dict] = [{}]
    for _ in range(60):
        t = study.ask()
        points.append(suggest(t, default_space("spike_fader")))
        study.tell(t, 0.0)
    print(f"{len(bars):,} bars, {len(folds)} folds, {len(points)} points of the spike fader's default space "
          f"(defaults first), CPU time best of {runs}")
    sets = {"spike fader alone": [GhostSetup(1, "fader", "spike_fader")],
            "fader + trend gate": [GhostSetup(1, "fader", "spike_fader"), GhostSetup(2, "trend", "trend_filter")]}
    for label, ghosts in sets.items():
        measure(label, ghosts, bars, cfg, folds, points, runs)


def measure(label: str, ghosts: list[GhostSetup], bars: pd.DataFrame, cfg: BacktestConfig, folds: list,
            points: list[dict], runs: int) -> None:
    build = {c: best_cpu(partial(TrialContext, bars, ghosts, cfg, searched=1, cache=bool(c)), 3) for c in (1, 0)}
    ctx = {c: TrialContext(bars, ghosts, cfg, searched=1, cache=bool(c)) for c in (1, 0)}
    cost: dict[int, list[float]] = {1: [], 0: []}
    trades, infeasible = [], []
    feasible = None
    for p in points:
        first = run_trial(ctx[1], p)
        if first.infeasible:
            infeasible.append(best_cpu(partial(run_trial, ctx[1], p), runs))
            continue
        feasible = first
        for c in (1, 0):
            cost[c].append(best_cpu(partial(run_trial, ctx[c], p), runs))
        trades.append(first.n_trades)
    assert feasible is not None
    scores = best_cpu(partial(feasible.scores, folds, "sharpe", 5), runs)
    print(f"\n{label}: {len(trades)} feasible points (trades per run: median {statistics.median(trades):g}, "
          f"max {max(trades)}), {len(infeasible)} infeasible")
    for c in (1, 0):
        v = cost[c]
        print(f"  caches {'on ' if c else 'off'}: context {build[c] * 1e3:5.1f} ms; per trial median "
              f"{statistics.median(v) * 1e3:5.1f} ms, mean {statistics.mean(v) * 1e3:5.1f} ms, defaults "
              f"{v[0] * 1e3:5.1f} ms, costliest {max(v) * 1e3:5.1f} ms")
    print(f"  infeasible point: {statistics.median(infeasible) * 1e3:.3f} ms; 5-fold train+test scores of a run: "
          f"{scores * 1e3:.2f} ms")

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
