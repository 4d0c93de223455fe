"""Measure the figures the market simulator is calibrated to, and the simulator's own, side by side.

Usage: .venv/bin/python benchmarks/calibrate_sim.py [--days 30] [--seed 7] [--stored EXCHANGE:SYMBOL]
--stored also measures the 1m candles the desk stored for that instrument (the desk's database from the usual
settings, e.g. RUN_DIR/DATABASE_URL): the check issue 14 made by hand (0.16 % per minute over 8.6 days).
Data: $MARKET_DATA_DIR, else ../shared/data next to the repository (see ../shared/data/README.md).

Real figures come from
- klines/freqtrade/binance_spot_BTCUSDT_1m_2025-05-20_2025-08-18__filimonov.csv.gz (90 days of 1m bars):
  per-minute close-to-close log-return std (raw and robust 1.4826 x MAD), volume per minute mean/median,
  std of log volume, corr(volume, |return|), median 1m high/low range, episodes of >= 1.2 % in 15 min;
- klines/binance_api_spot_BTCUSDT_1m_2020-01-01_2020-01-07.csv.gz (tb_base_av = taker-buy base volume):
  taker-buy share of volume and its slope on the standardised minute return; trades per minute.
The simulator's figures are measured on its bars (BarBuilder over its trades) for --days simulated days,
at its default (calibrated) spike rate, without spikes, and at the old demo rate of 24 a day.
Per regime: real and simulated minutes are put in the same volatility buckets (trailing 30-minute realised
std vs the calibrated per-minute std: calm < 0.7x, normal 0.7-1.5x, volatile > 1.5x) and compared bucket by
bucket (share of minutes, return std, mean volume). The real file has no regime labels, so the same
classifier on both sides is the fair comparison. Spike episodes (>= 1.2 % in 15 min, a new episode after 5
quiet minutes) are counted the same way on both.
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
from apps.market.sim import CAL_RETURN_STD, CAL_SPIKES_PER_DAY, MarketSimulator  # noqa: E402

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
    def horizon_std(minutes: int) -> float:
        return float(np.log(close.resample(f"{minutes}min").last().dropna()).diff().dropna().std())

    return {
        "std_1h": horizon_std(60),
        "std_1d": horizon_std(1440),
        "std": float(r.std()),
        "robust_std": float(1.4826 * (r - r.median()).abs().median()),
        "kurtosis": float(r.kurt()),
        "vol_mean": float(volume.mean()),
        "vol_median": float(volume.median()),
        "log_vol_std": float(lv.std()),
        "corr_vol_absret": float(np.corrcoef(volume.reindex(r.index), r.abs())[0, 1]),
    }


BUCKETS = (("calm", 0.0, 0.7), ("normal", 0.7, 1.5), ("volatile", 1.5, float("inf")))


def episodes(close: pd.Series) -> tuple[int, int]:
    """(bars, episodes) of a >= 1.2 % close-to-close move within 15 minutes; an episode ends after 5 quiet minutes."""
    ref = close.reindex(close.index - pd.Timedelta(minutes=15)).to_numpy()
    spike = np.abs(close.to_numpy() / ref - 1) >= 0.012
    times = close.index[spike]
    gaps = np.diff(times.as_unit("s").asi8) if len(times) else np.array([])
    return int(spike.sum()), int((gaps > 300).sum() + (1 if len(times) else 0))


def regime_figures(close: pd.Series, volume: pd.Series) -> dict[str, tuple[float, float, float]]:
    """Per volatility bucket: (share of minutes, return std, mean volume)."""
    r = np.log(close).diff()
    gap = close.index.to_series().diff() != pd.Timedelta(minutes=1)
    r[gap.to_numpy()] = np.nan
    trailing = r.rolling(30, min_periods=20).std().shift(1) / CAL_RETURN_STD
    ok = trailing.notna() & r.notna()
    out = {}
    for name, lo, hi in BUCKETS:
        m = ok & (trailing >= lo) & (trailing < hi)
        out[name] = (float(m.sum() / ok.sum()), float(r[m].std()), float(volume[m].mean()))
    return out


def real_figures(base: Path) -> dict[str, float]:
    df = pd.read_csv(base / FILIMONOV)
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("date"), utc=True))
    out = {"rows": float(len(df)), "median_close": float(df.close.median()),
           "median_range_pct": float(((df.high / df.low - 1) * 100).median()),
           "p90_range_pct": float(((df.high / df.low - 1) * 100).quantile(0.9))}
    out.update(minute_stats(df.close, df.volume))
    out["close_lo"], out["close_hi"] = float(df.close.min()), float(df.close.max())
    bars, eps = episodes(df.close)
    out["spike_bars"], out["spike_episodes"] = float(bars), float(eps)
    out["episodes_per_day"] = eps / (len(df) / 1440)
    out["regimes"] = regime_figures(df.close, df.volume)  # type: ignore[assignment]
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


def sim_figures(days: float, seed: int, spikes_per_day: float) -> dict:
    sim = MarketSimulator(seed=seed, spikes_per_day=spikes_per_day, trades_per_minute=5)
    builder = BarBuilder(has_liquidations=True)
    trades, _liqs = sim.advance(sim.now_ms + int(days * 86_400_000))
    bars = [b for t in trades for b in builder.add_trade(t)]
    df = pd.DataFrame(bars).set_index("open_time")
    out = minute_stats(df.close, df.volume)
    out["taker_share"] = float(df.taker_buy_volume.sum() / df.volume.sum())
    out["spikes"] = float(len(sim.spikes))
    out["episodes_per_day"] = episodes(df.close)[1] / days
    out["expected_std"] = sim.expected_return_std
    out["regimes"] = regime_figures(df.close, df.volume)
    out["price_lo"], out["price_hi"] = float(df.low.min()), float(df.high.max())
    return out


def regime_line(real: dict, sim: dict) -> str:
    parts = []
    for name, _, _ in BUCKETS:
        rs, rstd, rvol = real[name]
        ss, sstd, svol = sim[name]
        parts.append(f"{name} share {ss:.2f}/{rs:.2f} std x{sstd / rstd:.2f} vol x{svol / rvol:.2f}")
    return "; ".join(parts)


def stored_figures(market: str) -> dict:
    """The same figures on the 1m candles the desk stored for `exchange:symbol` (Django set up from settings)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")
    django.setup()
    from apps.market.models import Candle

    exchange, _, symbol = market.partition(":")
    rows = list(Candle.objects.filter(instrument__exchange__code=exchange, instrument__symbol=symbol,
                                      timeframe="1m").order_by("open_time")
                .values_list("open_time", "close", "volume", "low", "high"))
    if len(rows) < 120:
        sys.exit(f"only {len(rows)} stored 1m candles for {market}")
    df = pd.DataFrame(rows, columns=["open_time", "close", "volume", "low", "high"]).set_index("open_time")
    df = df.astype(float)
    df.index = pd.DatetimeIndex(df.index)
    out = minute_stats(df.close, df.volume)
    out["days"] = len(df) / 1440
    out["episodes_per_day"] = episodes(df.close)[1] / out["days"]
    out["price_lo"], out["price_hi"] = float(df.low.min()), float(df.high.max())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stored", metavar="EXCHANGE:SYMBOL", help="also measure the desk's stored 1m candles")
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
    print(f"real  1h return std {real['std_1h'] * 100:.3f}% 1d {real['std_1d'] * 100:.3f}% | "
          f"close range {real['close_lo']:.0f}-{real['close_hi']:.0f}")
    print(f"real  >=1.2%/15min episodes {real['episodes_per_day']:.2f}/day | regimes (share, std, mean vol): "
          + "; ".join(f"{k} {v[0]:.2f} {v[1] * 100:.4f}% {v[2]:.2f}" for k, v in real["regimes"].items()))
    for spd in (CAL_SPIKES_PER_DAY, 0.0, 24.0):
        s = sim_figures(args.days, args.seed, spd)
        label = "default (calibrated)" if spd == CAL_SPIKES_PER_DAY else ("no spikes" if spd == 0 else "demo")
        print(f"sim   {args.days:g} d seed {args.seed} spikes/day {spd:g} {label} ({s['spikes']:.0f} spikes): "
              f"ret std {s['std'] * 100:.4f}% (x{s['std'] / real['std']:.2f}; model expects "
              f"{s['expected_std'] * 100:.4f}%) robust {s['robust_std'] * 100:.4f}% "
              f"(x{s['robust_std'] / real['robust_std']:.2f}) kurt {s['kurtosis']:.1f} | "
              f"vol/min mean {s['vol_mean']:.2f} (x{s['vol_mean'] / real['vol_mean']:.2f}) "
              f"median {s['vol_median']:.2f} (x{s['vol_median'] / real['vol_median']:.2f}) "
              f"log-std {s['log_vol_std']:.2f} corr(vol,|r|) {s['corr_vol_absret']:.2f} | "
              f"taker-buy share {s['taker_share']:.3f} | episodes {s['episodes_per_day']:.2f}/day "
              f"(x{s['episodes_per_day'] / real['episodes_per_day']:.2f}) | "
              f"price {s['price_lo']:.0f}-{s['price_hi']:.0f}")
        print(f"      over time: 1h return std {s['std_1h'] * 100:.3f}% (x{s['std_1h'] / real['std_1h']:.2f}), "
              f"1d {s['std_1d'] * 100:.3f}% (x{s['std_1d'] / real['std_1d']:.2f}; {args.days:g} daily samples)")
        print(f"      per regime (sim/real): {regime_line(real['regimes'], s['regimes'])}")
    if args.stored:
        d = stored_figures(args.stored)
        print(f"desk  stored 1m candles of {args.stored} ({d['days']:.1f} days): ret std {d['std'] * 100:.4f}% "
              f"(x{d['std'] / real['std']:.2f}) robust {d['robust_std'] * 100:.4f}% "
              f"(x{d['robust_std'] / real['robust_std']:.2f}) | vol/min mean {d['vol_mean']:.2f} "
              f"(x{d['vol_mean'] / real['vol_mean']:.2f}) median {d['vol_median']:.2f} | 1h std "
              f"{d['std_1h'] * 100:.3f}% (x{d['std_1h'] / real['std_1h']:.2f}) | episodes "
              f"{d['episodes_per_day']:.2f}/day | price {d['price_lo']:.0f}-{d['price_hi']:.0f}")
    print(f"load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
