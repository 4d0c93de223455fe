"""Measure the figures the market simulator is calibrated to, and the simulator's own, side by side.

Usage: .venv/bin/python benchmarks/calibrate_sim.py [--days 5] [--seed 7]
Data: $MARKET_DATA_DIR, else ../shared/data next to the repository (see ../shared/data/README.md).

Real figures come from
- klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz (90 days of 1m bars):
  per-minute close-to-close log-return std (raw and robust 1.4826 x MAD), volume per minute mean/median,
  std of log volume, corr(volume, |return|), median 1m high/low range, episodes of >= 1.2 % in 15 min;
- klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz (tb_base_av = taker-buy base volume):
  taker-buy share of volume and its slope on the standardised minute return; trades per minute.
The simulator's figures are measured on its bars (BarBuilder over its trades) for --days simulated days,
once without spikes and once with the default 24 a day.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.market.bar_builder import BarBuilder  # noqa: E402
from apps.market.sim import MarketSimulator  # noqa: E402

FILIMONOV = "klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz"
KLINES_2020 = "klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz"


def data_dir() -> Path:
    return Path(os.environ.get("MARKET_DATA_DIR") or ROOT.parent / "shared" / "data")


def minute_stats(close: pd.Series, volume: pd.Series) -> dict[str, float]:
    """Return std (raw, robust) of per-minute log returns on consecutive minutes, and volume figures."""
    r = np.log(close).diff()
    gap = close.index.to_series().diff() != pd.Timedelta(minutes=1)
    r = r[~gap.to_numpy()].dropna()
    lv = np.log(volume[volume > 0])
    return {
        "std": float(r.std()),
        "robust_std": float(1.4826 * (r - r.median()).abs().median()),
        "kurtosis": float(r.kurt()),
        "vol_mean": float(volume.mean()),
        "vol_median": float(volume.median()),
        "log_vol_std": float(lv.std()),
        "corr_vol_absret": float(np.corrcoef(volume.reindex(r.index), r.abs())[0, 1]),
    }


def real_figures(base: Path) -> dict[str, float]:
    df = pd.read_csv(base / FILIMONOV)
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), utc=True))
    out = {"rows": float(len(df)), "median_close": float(df.close.median()),
           "median_range_pct": float(((df.high / df.low - 1) * 100).median()),
           "p90_range_pct": float(((df.high / df.low - 1) * 100).quantile(0.9))}
    out.update(minute_stats(df.close, df.volume))
    ref = df.close.reindex(df.index - pd.Timedelta(minutes=15)).to_numpy()
    spike = np.abs(df.close.to_numpy() / ref - 1) >= 0.012
    times = df.index[spike]
    out["spike_bars"] = float(spike.sum())
    gaps = np.diff(times.as_unit("s").asi8) if len(times) else np.array([])
    out["spike_episodes"] = float((gaps > 300).sum() + (1 if len(times) else 0))
    k = pd.read_csv(base / KLINES_2020)
    share = k.tb_base_av / k.volume
    kr = np.log(k.close).diff()
    mask = kr.notna() & share.notna()
    out["taker_share"] = float(k.tb_base_av.sum() / k.volume.sum())
    out["taker_share_median"] = float(share.median())
    out["taker_slope"] = float(np.polyfit(kr[mask] / kr.std(), share[mask], 1)[0])
    out["trades_mean"] = float(k.trades.mean())
    out["trades_median"] = float(k.trades.median())
    return out


def sim_figures(days: float, seed: int, spikes_per_day: float) -> dict[str, float]:
    sim = MarketSimulator(seed=seed, spikes_per_day=spikes_per_day, trades_per_minute=20)
    builder = BarBuilder(has_liquidations=True)
    trades, _liqs = sim.advance(sim.now_ms + int(days * 86_400_000))
    bars = [b for t in trades for b in builder.add_trade(t)]
    df = pd.DataFrame(bars).set_index("open_time")
    out = minute_stats(df.close, df.volume)
    out["taker_share"] = float(df.taker_buy_volume.sum() / df.volume.sum())
    out["spikes"] = float(len(sim.spikes))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    base = data_dir()
    if not (base / FILIMONOV).exists():
        sys.exit(f"market data not found under {base} (set MARKET_DATA_DIR)")
    t0 = time.perf_counter()
    real = real_figures(base)
    print(f"real  BTC/USDT 1m 2025-05-20..08-18 ({real['rows']:.0f} bars): "
          f"ret std {real['std'] * 100:.4f}% robust {real['robust_std'] * 100:.4f}% "
          f"kurt {real['kurtosis']:.1f} | vol/min mean {real['vol_mean']:.2f} "
          f"median {real['vol_median']:.2f} log-std {real['log_vol_std']:.2f} "
          f"corr(vol,|r|) {real['corr_vol_absret']:.2f} | median close {real['median_close']:.0f} "
          f"1m range median {real['median_range_pct']:.3f}% p90 {real['p90_range_pct']:.3f}% | "
          f">=1.2%/15min bars {real['spike_bars']:.0f} episodes {real['spike_episodes']:.0f}")
    print(f"real  BTC/USDT 1m 2020-01-01..07 taker-buy share {real['taker_share']:.3f} "
          f"(median/min {real['taker_share_median']:.3f}) slope {real['taker_slope']:.3f}/std | "
          f"trades/min mean {real['trades_mean']:.0f} median {real['trades_median']:.0f}")
    for spd in (0.0, 24.0):
        s = sim_figures(args.days, args.seed, spd)
        print(f"sim   {args.days:g} d seed {args.seed} spikes/day {spd:g} ({s['spikes']:.0f} spikes): "
              f"ret std {s['std'] * 100:.4f}% (x{s['std'] / real['std']:.2f}) "
              f"robust {s['robust_std'] * 100:.4f}% "
              f"(x{s['robust_std'] / real['robust_std']:.2f}) kurt {s['kurtosis']:.1f} | "
              f"vol/min mean {s['vol_mean']:.2f} (x{s['vol_mean'] / real['vol_mean']:.2f}) "
              f"median {s['vol_median']:.2f} (x{s['vol_median'] / real['vol_median']:.2f}) "
              f"log-std {s['log_vol_std']:.2f} corr(vol,|r|) {s['corr_vol_absret']:.2f} | "
              f"taker-buy share {s['taker_share']:.3f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
