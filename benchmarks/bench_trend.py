"""Cost of the trend filter: trend_state / evaluate over the real 90-day file, and one live evaluation.

Prints best-of-N timings (the machine is shared; the minimum is the least disturbed run), plus the share
of time in each direction/regime. Usage: .venv/bin/python benchmarks/bench_trend.py
Data: the real 90-day BTC/USDT 1m file from ../shared/data (or $MARKET_DATA_DIR).
"""

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.engine import trend  # noqa: E402
from apps.engine.bars import validate_bars  # noqa: E402
from apps.engine.registry import latest_draft  # noqa: E402


def load() -> pd.DataFrame:
    base = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data"))
    df = pd.read_csv(base / "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz")
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), utc=True), name="open_time")
    return df.astype(float)


def best_ms(fn: Callable[[], object], runs: int = 15) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    bars = load()
    cfg = trend.TrendConfig()
    n = len(bars)
    valid = validate_bars(bars)
    v_ms = best_ms(lambda: validate_bars(bars))
    c_ms = best_ms(lambda: trend._compute(valid, cfg))
    s_ms = best_ms(lambda: trend.trend_state(bars, cfg))
    e_ms = best_ms(lambda: trend.evaluate(bars, cfg))
    window = bars.iloc[-cfg.warmup_minutes:]
    live_ms = best_ms(lambda: latest_draft("trend_filter", cfg, window), runs=50)
    print(f"trend_state: {n} bars in {s_ms:.1f} ms = {n / s_ms * 1000:,.0f} bars/s "
          f"(of which validate_bars {v_ms:.1f} ms, the filter itself {c_ms:.1f} ms = {n / c_ms * 1000:,.0f} bars/s)")
    print(f"evaluate (ghost): {e_ms:.1f} ms = {n / e_ms * 1000:,.0f} bars/s; live evaluation on the "
          f"{cfg.warmup_minutes}-bar window {live_ms:.2f} ms")
    st = trend.trend_state(bars, cfg)
    r = st[st["ready"]]
    d = r["direction"].value_counts(normalize=True)
    g = r["regime"].value_counts(normalize=True)
    print("direction shares (ready bars): " + ", ".join(f"{trend.DIRECTION_NAMES[k]} {d.get(k, 0):.2%}"
                                                        for k in (2, 1, 0, -1, -2)))
    print("regime shares (ready bars): " + ", ".join(f"{trend.REGIME_NAMES[k]} {g.get(k, 0):.2%}"
                                                     for k in (1, 0, -1, 2)))


if __name__ == "__main__":
    main()
