"""Throughput of the pure trade path (Sanitiser + BarBuilder) on the real 2026-05-08 COIN-M aggTrades day.

105 280 Binance BTCUSD_PERP aggTrades (quantity in 100-USD contracts -> base = qty * 100 / price;
is_buyer_maker true = taker SELL). Times, best of 3, on Trade objects already built (parsing is not the
builder's cost): the BarBuilder alone (notional whale rule), with the rolling-median whale rule
(multiple 5, window 1000), and Sanitiser + BarBuilder as the feed pipeline runs them. Prints trades/s.
Usage: .venv/bin/python benchmarks/bench_bar_builder.py
Data: ../shared/data (or $MARKET_DATA_DIR).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FILE = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"


def main() -> None:
    from apps.market.bar_builder import BarBuilder, Trade
    from apps.market.sanitize import Sanitiser

    path = Path(os.environ.get("MARKET_DATA_DIR", ROOT.parent / "shared" / "data")) / FILE
    raw = pd.read_csv(path)
    base = (raw.quantity * 100.0 / raw.price).tolist()
    side = np.where(raw.is_buyer_maker, "sell", "buy").tolist()
    trades = [Trade(ts, p, a, s, str(i)) for ts, p, a, s, i in zip(
        raw.transact_time.tolist(), raw.price.tolist(), base, side, raw.agg_trade_id.tolist(), strict=True)]
    end = trades[-1].ts_ms + 120_000

    def builder_only(**kw) -> int:
        b = BarBuilder(**kw)
        n = 0
        for t in trades:
            n += len(b.add_trade(t))
        return n + len(b.flush(end))

    def pipeline_pure() -> int:
        s, b, n = Sanitiser(), BarBuilder(whale_median_multiple=5.0), 0
        for t in trades:
            if s.check_trade(t, t.ts_ms) is None:
                n += len(b.add_trade(t))
        return n + len(b.flush(end))

    cases = {
        "builder (notional whale rule)": lambda: builder_only(),
        "builder (+ rolling-median whale rule x5/1000)": lambda: builder_only(whale_median_multiple=5.0),
        "sanitiser + builder": pipeline_pure,
    }
    print(f"{len(trades)} real trades, 2026-05-08 BTCUSD_PERP")
    for name, fn in cases.items():
        best, bars = float("inf"), 0
        for _ in range(3):
            t0 = time.perf_counter()
            bars = fn()
            best = min(best, time.perf_counter() - t0)
        print(f"{name:48s} {best * 1000:7.1f} ms  {len(trades) / best:>10,.0f} trades/s  ({bars} bars)")


if __name__ == "__main__":
    main()
