"""Cost of the spike fader: whole-series (backtest) throughput and per-bar live evaluation.

Prints one line of figures. Usage: .venv/bin/python benchmarks/bench_spike_fader.py
Data: the real 90-day BTC/USDT 1m file from ../shared/data (or $MARKET_DATA_DIR).
"""

import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.engine.registry import latest_draft, warmup_minutes_for  # noqa: E402
from apps.engine.spike_fader import SpikeFaderConfig, evaluate  # noqa: E402


def load() -> pd.DataFrame:
    base = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    df = pd.read_csv(base / "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz",
                     parse_dates=["date"]).set_index("date")
    df.index.name = "open_time"
    return df.astype(float)


def main() -> None:
    bars = load()
    cfg = SpikeFaderConfig()
    t = time.perf_counter()
    runs = 5
    for _ in range(runs):
        drafts = evaluate(bars, cfg)
    full = (time.perf_counter() - t) / runs
    window = warmup_minutes_for("spike_fader", cfg) + 1
    n_live = 500
    t = time.perf_counter()
    for i in range(len(bars) - n_live, len(bars)):
        latest_draft("spike_fader", cfg, bars.iloc[i - window + 1: i + 1])
    live = (time.perf_counter() - t) / n_live
    print(f"spike_fader: {len(bars)} bars in {full * 1000:.1f} ms = {len(bars) / full:,.0f} bars/s (backtest); "
          f"live per-bar evaluation on a {window}-bar window {live * 1000:.2f} ms; "
          f"signals {(drafts['side'] != 0).sum()}")


if __name__ == "__main__":
    main()
