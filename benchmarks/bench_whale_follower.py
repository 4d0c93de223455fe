"""Cost of the whale follower: whole-series (backtest) throughput and the live evaluation of one window.

Usage: .venv/bin/python benchmarks/bench_whale_follower.py
Data: the real 90-day BTC/USDT 1m file (130,708 bars) from ../shared/data (or $MARKET_DATA_DIR). That
file is OHLCV only (no trade sizes), so two cases are timed:
1. the REAL file as it is: every bar is idle with "no trade sizes" (what production does on it);
2. the same bars with SYNTHETIC whale volumes and a SYNTHETIC taker split (random numbers, seeded,
   clearly not market data) so that the burst statistics, the trend/CVD gates and the reasons all run.
   These figures measure code speed only; no signal count from them means anything about the market.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.engine.cvd import CvdConfig, cvd_state  # noqa: E402
from apps.engine.registry import latest_draft, warmup_minutes_for  # noqa: E402
from apps.engine.trend import TrendConfig, trend_state  # noqa: E402
from apps.engine.whale_follower import WhaleFollowerConfig, evaluate  # noqa: E402


def load() -> pd.DataFrame:
    base = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    df = pd.read_csv(base / "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz",
                     parse_dates=["date"]).set_index("date")
    df.index.name = "open_time"
    return df.astype(float)


def with_synthetic_whales(bars: pd.DataFrame, seed: int = 11) -> pd.DataFrame:
    """SYNTHETIC columns for timing only: whale volume ~8 % of volume on random sides, taker split ~50/50,
    and one-sided whale bursts on ~0.3 % of bars."""
    rng = np.random.default_rng(seed)
    n = len(bars)
    vol = bars["volume"].to_numpy()
    share = np.clip(rng.normal(0.5, 0.08, n), 0.05, 0.95)
    wb = vol * 0.04 * rng.random(n)
    ws = vol * 0.04 * rng.random(n)
    burst = rng.random(n) < 0.003
    side = rng.random(n) < 0.5
    wb = np.where(burst & side, wb + vol * 0.6, wb)
    ws = np.where(burst & ~side, ws + vol * 0.6, ws)
    share = np.where(burst, np.where(side, 0.8, 0.2), share)
    return bars.assign(taker_buy_volume=vol * share, taker_sell_volume=vol * (1 - share),
                       trades=rng.poisson(300, n).astype(float), whale_buy_volume=wb, whale_sell_volume=ws)


def timed(fn, runs: int = 5) -> tuple[float, object]:
    fn()  # warm caches
    t = time.perf_counter()
    for _ in range(runs):
        out = fn()
    return (time.perf_counter() - t) / runs, out


def main() -> None:
    cfg = WhaleFollowerConfig()
    real = load()
    n = len(real)
    s_idle, d_idle = timed(lambda: evaluate(real, cfg))
    print(f"whale_follower, REAL 90-day file (no trade sizes -> idle): {n} bars in {s_idle * 1000:.1f} ms = "
          f"{n / s_idle:,.0f} bars/s; signals {(d_idle['side'] != 0).sum()}")

    syn = with_synthetic_whales(real)
    s_full, d_full = timed(lambda: evaluate(syn, cfg), runs=3)
    sig = int((d_full["side"] != 0).sum())
    flows = int(d_full["reason"].str.contains("flow").sum())
    print(f"whale_follower, SYNTHETIC whale columns (timing only), gates computed inside: {n} bars in "
          f"{s_full * 1000:.1f} ms = {n / s_full:,.0f} bars/s (bars with a large net whale flow {flows}, "
          f"signals {sig})")
    trend, cvd = trend_state(syn, TrendConfig()), cvd_state(syn, CvdConfig())
    s_pre, _ = timed(lambda: evaluate(syn, cfg, trend=trend, cvd=cvd), runs=3)
    print(f"whale_follower, SYNTHETIC, trend/CVD states passed in (a runner computes them once): "
          f"{s_pre * 1000:.1f} ms = {n / s_pre:,.0f} bars/s")

    window = warmup_minutes_for("whale_follower", cfg)
    n_live = 200
    t = time.perf_counter()
    for i in range(n - n_live, n):
        latest_draft("whale_follower", cfg, syn.iloc[i - window + 1: i + 1])
    live = (time.perf_counter() - t) / n_live
    t = time.perf_counter()
    for i in range(n - n_live, n):
        latest_draft("whale_follower", cfg, real.iloc[i - window + 1: i + 1])
    live_idle = (time.perf_counter() - t) / n_live
    print(f"whale_follower live: one evaluation of the {window}-bar window {live * 1000:.2f} ms (SYNTHETIC whale "
          f"columns), {live_idle * 1000:.2f} ms (REAL bars, no trade sizes)")


if __name__ == "__main__":
    main()
