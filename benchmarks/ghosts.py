"""Cost of the five ghosts over the real 90-day BTC/USDT 1m file (130,708 bars), one by one and together.

Prints, per ghost (GHOSTS[kind].evaluate on the raw file, i.e. including its own validation) and for all
five through apps.engine.batch.evaluate_all (validate once, shared trend/CVD states, guarded): best-of-N
CPU time (time.process_time: the machine is shared, CPU time is what the code costs) and best wall time,
in ms and bars/s; then one live evaluation (the last `warmup_minutes` window of the most demanding ghost,
all five through evaluate_all) in ms. Target (issue 4): all five together >= 2,000,000 bars/s.

Two inputs:
- REAL: the freqtrade download has OHLCV only (no taker split, whale or liquidation volumes), so the CVD,
  whale and liquidation ghosts take their idle paths;
- SYNTHETIC EXTRAS: the same real OHLCV bars plus RANDOM, made-up taker split / trade counts / whale and
  liquidation volumes, for timing the busy paths only. They are not market data and say nothing about
  what the ghosts would find.

Memory: on this VM a page fault costs ~2.5 us (0.6 ms per fresh MB), so every fresh 130k-row float array
costs more to fault in than to compute; glibc returns freed heap to the OS between calls, so each call
faults its memory in again. The figures are for the environment as given (printed); with
MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=33554432 in a worker's environment the freed heap
is kept and reused (all five on the real file ~12 % less CPU, measured 2026-11-26).

Last figures (2026-12-04, load ~7, best of 5): real file, all five via evaluate_all 23.9 ms CPU = 5.5 M
bars/s; synthetic busy columns 124.5 ms = 1.05 M bars/s (271 ms before that day's speed pass; alone:
liquidation hunter 70, whale follower 56, CVD 37, trend 23, spike fader 5 ms); live 12,151-bar window 6.3 ms
(real), 15.9 ms (synthetic).

Usage: .venv/bin/python benchmarks/ghosts.py [runs]
"""

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.engine.batch import evaluate_all  # noqa: E402
from apps.engine.registry import DESK_KINDS, GHOSTS  # noqa: E402

DATA = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
TARGET = 2_000_000
DESK = {kind: GHOSTS[kind] for kind in DESK_KINDS}  # the five desk ghosts (not the lab-only textbook fader)


def load() -> pd.DataFrame:
    base = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    df = pd.read_csv(base / DATA)
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), utc=True), name="open_time")
    return df.astype("float64")


def synthetic_extras(bars: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """SYNTHETIC optional columns (random, for timing only) on top of the real OHLCV."""
    rng = np.random.default_rng(seed)
    b = bars.copy()
    v = b["volume"].to_numpy()
    n = len(b)
    b["taker_buy_volume"] = v * rng.uniform(0.2, 0.8, n)
    b["trades"] = np.rint(v * 50)
    b["whale_buy_volume"] = np.where(rng.random(n) < 0.05, v * rng.uniform(0, 0.9, n), 0.0)
    b["whale_sell_volume"] = np.where(rng.random(n) < 0.05, v * rng.uniform(0, 0.9, n), 0.0)
    b["liq_long_volume"] = np.where(rng.random(n) < 0.02, rng.exponential(3, n), 0.0)
    b["liq_short_volume"] = np.where(rng.random(n) < 0.02, rng.exponential(3, n), 0.0)
    return b


def best(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """(best CPU ms, best wall ms) over `runs` calls after one warm-up call."""
    fn()
    cpu = wall = float("inf")
    for _ in range(runs):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - w)
    return cpu * 1000, wall * 1000


def line(label: str, n: int, cpu: float, wall: float) -> str:
    return (f"  {label:<34} cpu {cpu:8.1f} ms = {n / cpu * 1000:>11,.0f} bars/s   "
            f"wall {wall:8.1f} ms = {n / wall * 1000:>11,.0f} bars/s")


def run(title: str, bars: pd.DataFrame, runs: int) -> float:
    n = len(bars)
    configs = {kind: spec.config_cls() for kind, spec in DESK.items()}
    print(f"{title}: {n:,} bars, best of {runs}")
    total = 0.0
    for kind, spec in DESK.items():
        cpu, wall = best(lambda spec=spec, kind=kind: spec.evaluate(bars, configs[kind]), runs)
        total += cpu
        print(line(f"{kind} (alone)", n, cpu, wall))
    print(line("sum of the five, one by one", n, total, float("nan")).split("   wall")[0])
    results = evaluate_all(bars, configs)
    bad = {k: r.error for k, r in results.items() if r.error}
    if bad:
        raise SystemExit(f"evaluate_all failed: {bad}")
    cpu, wall = best(lambda: evaluate_all(bars, configs), runs)
    print(line("ALL FIVE via evaluate_all", n, cpu, wall))
    return n / cpu * 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    tuning = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"allocator: {tuning or 'glibc defaults (no MALLOC_* environment)'}")
    real = load()
    rate = run("REAL 90-day BTC/USDT 1m (OHLCV only: CVD, whale, liquidation ghosts idle)", real, runs)
    run("SAME BARS + SYNTHETIC taker/whale/liquidation columns (random, timing only, NOT market data)",
        synthetic_extras(real), runs)
    configs = {kind: spec.config_cls() for kind, spec in DESK.items()}
    warm = max(spec.config_cls().warmup_minutes for spec in DESK.values())
    for title, bars in (("real", real), ("synthetic extras", synthetic_extras(real))):
        window = bars.iloc[-warm:]
        cpu, wall = best(lambda window=window: evaluate_all(window, configs), runs * 5)
        print(f"live evaluation, all five via evaluate_all on the last {warm}-bar window ({title}): "
              f"cpu {cpu:.2f} ms, wall {wall:.2f} ms")
    verdict = "REACHED" if rate >= TARGET else "NOT reached"
    print(f"target all five >= {TARGET:,} bars/s (CPU time, real file): {verdict} ({rate:,.0f} bars/s)")


if __name__ == "__main__":
    main()
