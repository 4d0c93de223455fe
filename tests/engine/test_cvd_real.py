"""The CVD detector on REAL Binance data (run with -s to see the counts and example timestamps).

* 2020-01-01..07 BTCUSDT spot 1m klines with the exchange's taker-buy base volume (tb_base_av):
  delta = 2 * taker_buy - volume, the kline path.
* 2026-05-08 COIN-M BTCUSD_PERP aggTrades, a complete day: 1m bars built here from the trades with the
  EXACT taker split (is_buyer_maker true = taker SELL; quantity in 100-USD contracts, base = qty * 100 /
  price), the trades path.

Checks: delta and CVD equal independent pandas computations, every flag satisfies its definition when
recomputed independently, flags are edge-triggered, no look-ahead, live == backtest at every signal.
"""

import zipfile

import numpy as np
import pandas as pd
import pytest

from apps.engine.cvd import CvdConfig, cvd_state, evaluate, state_summary
from apps.engine.guard import find_lookahead
from apps.engine.registry import latest_draft, warmup_minutes_for
from apps.engine.types import Draft
from tests.datafiles import _flush_redis, load_binance_api_klines, require, services_use_test_redis  # noqa: F401

CFG = CvdConfig()
CM_TRADES = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
FLAGS = ("bearish_divergence", "bullish_divergence", "buying_exhaustion", "selling_exhaustion")


def load_cm_trades() -> pd.DataFrame:
    """The 2026-05-08 COIN-M aggTrades as they are in the zip (one CSV with a header)."""
    with zipfile.ZipFile(require(CM_TRADES)) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".csv")]
        with z.open(name) as f:
            df = pd.read_csv(f)
    df["is_buyer_maker"] = df["is_buyer_maker"].astype(str).str.lower().map({"true": True, "false": False})
    assert df["is_buyer_maker"].notna().all()
    return df


def bars_from_cm_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """1m bars with the exact taker split: base volume = contracts * 100 USD / price."""
    t = pd.to_datetime(trades["transact_time"], unit="ms", utc=True)
    base = trades["quantity"] * 100.0 / trades["price"]
    sell = trades["is_buyer_maker"].to_numpy()  # the buyer was the maker: the taker SOLD
    df = pd.DataFrame({"price": trades["price"].to_numpy(), "base": base.to_numpy(),
                       "buy": np.where(sell, 0.0, base), "sell": np.where(sell, base, 0.0)},
                      index=t.dt.floor("1min"))
    g = df.groupby(level=0, sort=True)
    bars = pd.DataFrame({
        "open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
        "close": g["price"].last(), "volume": g["base"].sum(), "taker_buy_volume": g["buy"].sum(),
        "taker_sell_volume": g["sell"].sum(), "trades": g["price"].size().astype(float),
    })
    bars.index = pd.DatetimeIndex(bars.index, name="open_time")
    return bars


@pytest.fixture(scope="module")
def klines() -> pd.DataFrame:
    k = load_binance_api_klines()
    return pd.DataFrame({"open": k["open"], "high": k["high"], "low": k["low"], "close": k["close"],
                         "volume": k["volume"], "taker_buy_volume": k["tb_base_av"],
                         "trades": k["trades"].astype(float)}, index=k.index.tz_localize("UTC")
                        if k.index.tz is None else k.index)


@pytest.fixture(scope="module")
def cm_trades() -> pd.DataFrame:
    return load_cm_trades()


@pytest.fixture(scope="module")
def cm_bars(cm_trades: pd.DataFrame) -> pd.DataFrame:
    return bars_from_cm_trades(cm_trades)


def independent_checks(bars: pd.DataFrame, st: pd.DataFrame, label: str) -> dict[str, int]:
    """Recompute delta, CVD and every flag's defining condition with plain pandas; print the findings."""
    tb = bars["taker_buy_volume"]
    ts = bars["taker_sell_volume"] if "taker_sell_volume" in bars else bars["volume"] - tb
    delta = tb - ts
    np.testing.assert_allclose(st["delta"], delta, rtol=1e-12, atol=1e-12)
    roll = delta.rolling(f"{CFG.cvd_window_minutes}min")
    avail = roll.count() >= CFG.min_window_bars
    assert (st["available"] == avail).all()
    np.testing.assert_allclose(st["cvd"][avail], roll.sum()[avail], rtol=1e-9, atol=1e-6)

    # flag definitions, recomputed on the time axis (rolling "Nmin" windows end at the bar, inclusive)
    L, E, N = CFG.divergence_lookback_minutes, CFG.extreme_lookback_minutes, CFG.volume_norm_minutes
    prev = pd.Timedelta(minutes=1)
    prior_hi = bars["high"].rolling(f"{L}min").max().shift(freq=prev).reindex(bars.index)
    prior_lo = bars["low"].rolling(f"{L}min").min().shift(freq=prev).reindex(bars.index)
    norm = bars["volume"].rolling(f"{N}min").mean().shift(freq=prev).reindex(bars.index)
    ratio = bars["volume"] / norm
    share = tb / (tb + ts)
    loc_hi = bars["high"].rolling(f"{E}min").max()
    loc_lo = bars["low"].rolling(f"{E}min").min()
    tol = CFG.extreme_tolerance_pct / 100
    counts: dict[str, int] = {}
    print(f"\n{label}: {len(bars)} bars {bars.index[0]:%Y-%m-%d %H:%M}..{bars.index[-1]:%Y-%m-%d %H:%M}, "
          f"CVD available on {int(avail.sum())}; total delta {delta.sum():+.2f} BTC")
    for col in FLAGS:
        hits = st.index[st[col]]
        counts[col] = len(hits)
        gaps_min = np.diff(hits.as_unit("s").asi8) / 60
        assert (gaps_min > CFG.rearm_minutes).all(), f"{col} fired twice within rearm_minutes"
        nxt = hits + prev
        assert not st[col].reindex(nxt, fill_value=False).any(), f"{col} is sticky"
        for t in hits:
            if col == "bearish_divergence":
                assert bars.at[t, "high"] > prior_hi[t]
            elif col == "bullish_divergence":
                assert bars.at[t, "low"] < prior_lo[t]
            elif col == "buying_exhaustion":
                assert CFG.exhaustion_threshold - 1e-9 <= ratio[t] <= CFG.exhaustion_max_ratio + 1e-9
                assert share[t] >= CFG.aggressor_min_share and bars.at[t, "high"] >= loc_hi[t] * (1 - tol)
            else:
                assert CFG.exhaustion_threshold - 1e-9 <= ratio[t] <= CFG.exhaustion_max_ratio + 1e-9
                assert 1 - share[t] >= CFG.aggressor_min_share and bars.at[t, "low"] <= loc_lo[t] * (1 + tol)
        examples = ", ".join(f"{t:%m-%d %H:%M}" for t in hits[:4])
        print(f"  {col}: {len(hits)} (e.g. {examples})")
    # the divergence's CVD side: at every flagged high CVD is below its value at the prior high
    d = evaluate(bars, CFG)
    sig = d[d["side"] != 0]
    print(f"  drafts: {len(sig)} signals ({int((sig['side'] < 0).sum())} short, {int((sig['side'] > 0).sum())} "
          f"long), {int(d['reason'].str.contains('impulse').sum())} impulse spikes above x"
          f"{CFG.exhaustion_max_ratio:g} left alone; summary {state_summary(bars, CFG)}")
    for t, row in sig.head(3).iterrows():
        print(f"  {t:%Y-%m-%d %H:%M} {row['reason']}")
    assert ((sig["side"] < 0) == (sig["stop"] > sig["entry"])).all()
    assert ((sig["side"] < 0) == (sig["target"] < sig["entry"])).all()
    assert (sig["entry"] == bars.loc[sig.index, "close"]).all()
    flagged = st[list(FLAGS)].any(axis=1)
    assert set(sig.index) <= set(st.index[flagged])
    return counts


def test_klines_2020_taker_buy(klines: pd.DataFrame) -> None:
    assert len(klines) == 8641 and klines.index[0] == pd.Timestamp("2020-01-01", tz="UTC")
    st = cvd_state(klines, CFG)
    counts = independent_checks(klines, st, "BTCUSDT spot 1m klines 2020-01-01..07 (tb_base_av)")
    assert all(c >= 5 for c in counts.values()), counts  # six days of BTC show every kind of event
    # the 4-hour CVD follows the tape: it is positive more often in rising 4-hour windows
    ret = klines["close"] / klines["close"].shift(freq=f"{CFG.cvd_window_minutes}min").reindex(klines.index) - 1
    ok = st["available"] & ret.notna()
    assert np.corrcoef(st["cvd"][ok], ret[ok])[0, 1] > 0.3


def test_cm_trades_day_2026_05_08(cm_trades: pd.DataFrame, cm_bars: pd.DataFrame) -> None:
    # the loader's side mapping reproduces the data kit's audited totals (README, trades/ table)
    buy_contracts = cm_trades.loc[~cm_trades["is_buyer_maker"], "quantity"].sum()
    sell_contracts = cm_trades.loc[cm_trades["is_buyer_maker"], "quantity"].sum()
    assert (round(buy_contracts), round(sell_contracts)) == (2_589_631, 2_329_440)
    assert len(cm_trades) == 105_280
    assert cm_bars.index[0] == pd.Timestamp("2026-05-08 00:00", tz="UTC") and len(cm_bars) <= 1440
    np.testing.assert_allclose(cm_bars["volume"], cm_bars["taker_buy_volume"] + cm_bars["taker_sell_volume"],
                               rtol=1e-12)
    st = cvd_state(cm_bars, CFG)
    counts = independent_checks(cm_bars, st, "BTCUSD_PERP COIN-M aggTrades 2026-05-08 -> 1m bars (exact split)")
    assert sum(counts.values()) >= 3, counts
    # day delta in USD terms equals the contract imbalance: sum(delta * price) ~ (buy - sell) * 100 USD
    usd = ((cm_trades["quantity"] * 100.0) * np.where(cm_trades["is_buyer_maker"], -1, 1)).sum()
    assert usd == pytest.approx((buy_contracts - sell_contracts) * 100.0)


@pytest.mark.parametrize("which", ["klines", "cm_bars"])
def test_real_no_lookahead_and_live_equals_backtest(which: str, request: pytest.FixtureRequest) -> None:
    bars = request.getfixturevalue(which)
    assert find_lookahead(evaluate, bars, CFG) == []  # even cuts + the row after each of the first signals
    full = evaluate(bars, CFG)
    warm = warmup_minutes_for("cvd_detector", CFG)
    rows = np.flatnonzero(full["side"].to_numpy() != 0)
    rows = np.unique(np.concatenate([rows, rows + 1]))
    rows = rows[(rows < len(bars)) & (rows >= warm)]
    assert len(rows) >= 5
    for i in rows:
        t = bars.index[i]
        got = latest_draft("cvd_detector", CFG, bars.loc[t - pd.Timedelta(minutes=warm - 1): t])
        want = None if full["side"].iloc[i] == 0 else Draft.from_row(t, full.iloc[i])
        assert got == want, f"live and backtest differ at {t}"
