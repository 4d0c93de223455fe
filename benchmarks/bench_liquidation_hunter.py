"""Cost of the liquidation hunter: whole-series (backtest) throughput and the live (last window) evaluation.

Usage: .venv/bin/python benchmarks/bench_liquidation_hunter.py
Data: the real 90-day BTC/USDT 1m file from ../shared/data (or $MARKET_DATA_DIR). That file has NO
liquidation feed, so the figures are printed for two inputs:
  1. the real bars as they are (liquidation columns NaN: the ghost is idle and says why on every bar);
  2. the real bars plus SYNTHETIC liquidation columns (random, seeded; sparse small liquidations on ~8 %
     of minutes plus ~360 random 3-minute bursts of 0.5-5 BTC per minute, both sides). These volumes are
     invented for timing only and are never presented as market data; the signal count printed for them
     means nothing about the market.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.engine.cvd import cvd_state  # noqa: E402
from apps.engine.liquidation_hunter import LiquidationHunterConfig, evaluate  # noqa: E402
from apps.engine.trend import trend_state  # noqa: E402


def load() -> pd.DataFrame:
    base = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    df = pd.read_csv(base / "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz",
                     parse_dates=["date"]).set_index("date")
    df.index.name = "open_time"
    return df.astype(float)


def with_synthetic_liquidations(bars: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """SYNTHETIC liquidation volumes (base units) for timing only; see the module docstring."""
    rng = np.random.default_rng(seed)
    n = len(bars)
    out = bars.copy()
    cols = []
    for _ in range(2):
        v = np.where(rng.random(n) < 0.08, rng.exponential(0.05, n), 0.0)
        for s in rng.choice(n - 3, size=180, replace=False):
            v[s:s + 3] += rng.uniform(0.5, 5.0, 3)
        cols.append(v)
    out["liq_long_volume"], out["liq_short_volume"] = cols
    return out


def timed(fn, runs: int = 5) -> tuple[float, object]:  # noqa: ANN001
    """Mean seconds per call. CPU time of this process (time.process_time), not wall time: the 2-core
    machine is shared, and under load wall time measures the neighbours; wall time is printed too."""
    fn()  # warm caches / imports
    t, w = time.process_time(), time.perf_counter()
    for _ in range(runs):
        res = fn()
    cpu, wall = (time.process_time() - t) / runs, (time.perf_counter() - w) / runs
    print(f"    (cpu {cpu * 1000:.1f} ms, wall {wall * 1000:.1f} ms per call)")
    return cpu, res


def main() -> None:
    real = load()
    synth = with_synthetic_liquidations(real)
    cfg = LiquidationHunterConfig()
    n = len(real)
    for label, bars in (("real bars, no liquidation feed", real), ("real bars + SYNTHETIC liquidations", synth)):
        sec, drafts = timed(lambda b=bars: evaluate(b, cfg))
        print(f"liquidation_hunter [{label}]: {n} bars in {sec * 1000:.1f} ms = {n / sec:,.0f} bars/s; "
              f"signals {(drafts['side'] != 0).sum()}")
    trend, cvd = trend_state(synth), cvd_state(synth)
    sec, _ = timed(lambda: evaluate(synth, cfg, trend=trend, cvd=cvd))
    print(f"liquidation_hunter [SYNTHETIC liquidations, trend/cvd states passed in]: {sec * 1000:.1f} ms "
          f"= {n / sec:,.0f} bars/s")
    warm = cfg.warmup_minutes
    n_live = 50
    t = time.process_time()
    for i in range(n - n_live, n):
        evaluate(synth.iloc[i - warm + 1: i + 1], cfg)
    live = (time.process_time() - t) / n_live
    print(f"liquidation_hunter live: one evaluation of the last {warm}-bar window {live * 1000:.2f} ms cpu "
          "(trend_state/cvd_state computed inside)")


if __name__ == "__main__":
    main()
