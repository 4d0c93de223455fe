"""The whale follower on REAL Binance trades (../shared/data, see its README; nothing here is synthetic).

(a) Trade-level burst detection on the USDT-M BTCUSDT large-trade recordings 2025-01-26..02-06. The
    recorder kept only trades >= 15 kUSD, so a rolling median of trade size cannot be measured there (it
    would be the median of LARGE trades): the print rule used there is notional only, and a test shows
    what the median rule does on such a file. No bars exist for those days.
(b) The full follow logic on 1-minute bars built here from the complete COIN-M BTCUSD_PERP aggTrades
    day 2026-05-08 (every trade size known). The bars are built with pandas in this module (a small
    loader; the production importer lives in apps/market).

Run with -s to see counts and example timestamps.
"""

import dataclasses
from collections import deque

import numpy as np
import pandas as pd
import pytest

from apps.engine.cvd import CvdConfig, cvd_state
from apps.engine.guard import find_lookahead
from apps.engine.trend import TrendConfig, trend_state
from apps.engine.whale_follower import WhaleFollowerConfig, burst_events, detect_bursts, evaluate, whale_bursts
from tests.datafiles import _flush_redis, require, services_use_test_redis  # noqa: F401

LARGE = "trades/binance_usdm_large_aggtrades_ge15kusd_2025-01-26_2025-02-06.csv.gz"
CM_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
CFG = WhaleFollowerConfig()
NOTIONAL = WhaleFollowerConfig(print_rule="notional")
# The default trend filter needs 202 h of history (slow SMA of 200 one-hour buckets); the trades day has
# 24 h. For the follow logic on that day the trend gate is a short-horizon trend filter (1h SMAs of 4 and
# 8 buckets, 4-hour volatility baseline: ready after 10 h), passed through evaluate's `trend=` argument.
SHORT_TREND = TrendConfig(fast_periods=4, slow_periods=8, momentum_periods=4, atr_periods=4, baseline_hours=4)


# -- loaders ------------------------------------------------------------------------------------------

def load_large_trades(symbol: str = "BTCUSDT") -> pd.DataFrame:
    """The >= 15 kUSD recorder log for one symbol as a detect_bursts trade list, sorted by trade time.

    No header; 7 columns; the symbol has a leading space; rows of several async streams interleave, so
    they are sorted (stably) by trade_time; is_buyer_maker True = the taker SOLD.
    """
    cols = ["event_ms", "symbol", "agg_id", "price", "qty", "trade_ms", "is_buyer_maker"]
    df = pd.read_csv(require(LARGE), header=None, names=cols, skipinitialspace=True)
    df = df[df["symbol"].astype(str).str.strip() == symbol].sort_values("trade_ms", kind="stable")
    maker = df["is_buyer_maker"].astype(str).str.strip() == "True"
    return pd.DataFrame({
        "ts": pd.to_datetime(df["trade_ms"].to_numpy(), unit="ms", utc=True),
        "price": df["price"].to_numpy(dtype=float),
        "amount": df["qty"].to_numpy(dtype=float),
        "side": np.where(maker, "sell", "buy"),
        "agg_id": df["agg_id"].to_numpy(),
    })


def load_cm_day() -> pd.DataFrame:
    """The COIN-M aggTrades day as a trade list: quantity is in contracts of 100 USD -> base = qty*100/price."""
    a = pd.read_csv(require(CM_DAY))
    return pd.DataFrame({
        "ts": pd.to_datetime(a["transact_time"].to_numpy(), unit="ms", utc=True),
        "price": a["price"].to_numpy(dtype=float),
        "amount": a["quantity"].to_numpy(dtype=float) * 100.0 / a["price"].to_numpy(dtype=float),
        "side": np.where(a["is_buyer_maker"].to_numpy(dtype=bool), "sell", "buy"),
        "contracts": a["quantity"].to_numpy(dtype=float),
    })


def bars_from_trades(trades: pd.DataFrame, whale: np.ndarray) -> pd.DataFrame:
    """1-minute bars (open times; minutes without trades have no bar) with OHLCV, the exact taker split,
    the trade count and the whale volumes per taker side for the trades flagged `whale`."""
    buy = trades["side"].to_numpy() == "buy"
    amt = trades["amount"].to_numpy()
    t = pd.DataFrame({
        "minute": trades["ts"].dt.floor("min"), "price": trades["price"].to_numpy(), "amount": amt,
        "buy": np.where(buy, amt, 0.0), "sell": np.where(buy, 0.0, amt),
        "wbuy": np.where(buy & whale, amt, 0.0), "wsell": np.where(~buy & whale, amt, 0.0),
    })
    g = t.groupby("minute", sort=True)
    bars = pd.DataFrame({
        "open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
        "close": g["price"].last(), "volume": g["amount"].sum(),
        "taker_buy_volume": g["buy"].sum(), "taker_sell_volume": g["sell"].sum(),
        "trades": g.size().astype(float),
        "whale_buy_volume": g["wbuy"].sum(), "whale_sell_volume": g["wsell"].sum(),
    })
    bars.index = pd.DatetimeIndex(bars.index, name="open_time")
    return bars


# -- (a) large-trade recordings -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    return load_large_trades()


def brute_force_bursts(tr: pd.DataFrame, whale: np.ndarray, cfg: WhaleFollowerConfig) -> np.ndarray:
    """Independent burst flags: a plain loop with a deque of the whale prints of the last burst_seconds."""
    ts = tr["ts"].to_numpy()
    notional = tr["price"].to_numpy() * tr["amount"].to_numpy()
    sgn = np.where(tr["side"].to_numpy() == "buy", 1, -1)
    span = np.timedelta64(int(cfg.burst_seconds * 1000), "ms")
    out = np.zeros(len(tr), dtype=np.int8)
    win: deque[int] = deque()
    for i in np.flatnonzero(whale):
        win.append(i)
        while ts[win[0]] <= ts[i] - span:
            win.popleft()
        net_n = sum(int(sgn[j]) for j in win)
        net = round(sum(sgn[j] * notional[j] for j in win), 2)  # whole cents, as documented: 5000 COIN-M
        # contracts are exactly 500 kUSD, but price * (qty * 100 / price) sums to 499999.99999... in floats
        if net > 0 and (net_n >= cfg.burst_min_prints or net >= cfg.burst_min_notional):
            out[i] = 1
        elif net < 0 and (-net_n >= cfg.burst_min_prints or -net >= cfg.burst_min_notional):
            out[i] = -1
    return out


def test_large_trade_recording_is_what_the_readme_says(large: pd.DataFrame) -> None:
    notional = large["price"] * large["amount"]
    assert len(large) == 8153 and large["agg_id"].is_unique
    assert notional.min() >= 14_999  # the recorder's filter: a sample of LARGE trades only
    assert large["ts"].is_monotonic_increasing  # after the stable sort by trade time


def test_bursts_in_the_large_trade_recording(large: pd.DataFrame) -> None:
    d = detect_bursts(large, NOTIONAL)
    notional = large["price"].to_numpy() * large["amount"].to_numpy()
    independent_whale = notional >= 100_000 * (1 - 1e-9)
    assert (d["whale"].to_numpy() == independent_whale).all()
    assert (d["burst"].to_numpy() == brute_force_bursts(large, independent_whale, NOTIONAL)).all()
    ev = burst_events(d)
    n_w = int(independent_whale.sum())
    n_wb = int((d["whale"] & (d["side"] == "buy")).sum())
    print(f"\n(a) BTCUSDT >= 15 kUSD recording {large['ts'].iloc[0]:%Y-%m-%d %H:%M}.."
          f"{large['ts'].iloc[-1]:%Y-%m-%d %H:%M} UTC: {len(large)} trades, {n_w} whale prints >= 100 kUSD "
          f"({n_wb} buy / {n_w - n_wb} sell), "
          f"{len(ev)} bursts ({int((ev['side'] == 'buy').sum())} buy, {int((ev['side'] == 'sell').sum())} sell; "
          f">= {NOTIONAL.burst_min_prints} net prints or >= {NOTIONAL.burst_min_notional:,.0f} net within "
          f"{NOTIONAL.burst_seconds:g} s)")
    top = ev.reindex(ev["peak_net_notional"].abs().sort_values(ascending=False).index).head(5)
    for _, e in top.iterrows():
        print(f"    {e['start']:%Y-%m-%d %H:%M:%S} UTC {e['side']:4s} burst, {e['prints']} prints in the run, "
              f"net {e['net_notional_at_start'] / 1e6:+.2f}M at detection, peak {e['peak_net_notional'] / 1e6:+.2f}M")
    # the price right after a burst: reported, not asserted (it is a market question, not a code property)
    px = pd.Series(large["price"].to_numpy(), index=large["ts"])
    agree = [np.sign(px[:e["start"] + pd.Timedelta(seconds=60)].iloc[-1] - px[:e["start"]].iloc[-1])
             * (1 if e["side"] == "buy" else -1) for _, e in ev.iterrows()]
    print(f"    last large-trade price 60 s after detection moved the burst's way in "
          f"{int(np.sum(np.array(agree) > 0))} of {len(ev)} bursts")
    assert 0 < len(ev) < n_w
    assert (ev["side"] == "sell").sum() > 0 and (ev["side"] == "buy").sum() > 0
    starts = d[d["burst_start"]]
    assert len(starts) == len(ev)
    ok_n = starts["net_prints"].abs() >= NOTIONAL.burst_min_prints
    ok_c = starts["net_notional"].abs() >= NOTIONAL.burst_min_notional
    assert (ok_n | ok_c).all()
    assert (np.sign(starts["net_notional"]) == starts["burst"]).all()
    # the biggest one is the 2025-01-27 sell-off (DeepSeek day): a sell burst
    assert top.iloc[0]["side"] == "sell" and top.iloc[0]["start"].strftime("%Y-%m-%d") == "2025-01-27"


def test_median_rule_is_meaningless_on_a_large_trades_only_file(large: pd.DataFrame) -> None:
    # the median of a >= 15 kUSD sample is itself a large trade, so "50 x median" asks for prints of
    # ~2 MUSD: the default "both" rule keeps almost nothing, which is why (a) uses print_rule="notional"
    both = detect_bursts(large, CFG)
    median_usd = (both["median_amount"] * both["price"]).median()
    n_both, n_notional = int(both["whale"].sum()), int(detect_bursts(large, NOTIONAL)["whale"].sum())
    print(f"\n(a) rolling median trade on the filtered file ~{median_usd:,.0f} USD; whale prints by rule: "
          f"both {n_both}, notional {n_notional}")
    assert median_usd >= 15_000
    assert n_both < 0.05 * n_notional


# -- (b) bars from the complete COIN-M day ------------------------------------------------------------

@pytest.fixture(scope="module")
def cm_trades() -> pd.DataFrame:
    return load_cm_day()


@pytest.fixture(scope="module")
def cm_detected(cm_trades: pd.DataFrame) -> pd.DataFrame:
    return detect_bursts(cm_trades, CFG)


@pytest.fixture(scope="module")
def cm_bars(cm_trades: pd.DataFrame, cm_detected: pd.DataFrame) -> pd.DataFrame:
    return bars_from_trades(cm_trades, cm_detected["whale"].to_numpy())


def test_cm_day_bars_are_consistent(cm_trades: pd.DataFrame, cm_bars: pd.DataFrame) -> None:
    assert len(cm_trades) == 105_280
    assert cm_bars.index[0] == pd.Timestamp("2026-05-08 00:00", tz="UTC")
    assert cm_bars.index[-1] == pd.Timestamp("2026-05-08 23:59", tz="UTC")
    assert len(cm_bars) == 1437  # three minutes of the day had no trade (the README's longest pause 3 min)
    assert cm_bars["trades"].sum() == len(cm_trades)
    np.testing.assert_allclose(cm_bars["volume"], cm_bars["taker_buy_volume"] + cm_bars["taker_sell_volume"],
                               rtol=1e-12)
    # notional of the day: contracts * 100 USD, exactly what the base conversion must give back
    day_usd = float((cm_trades["amount"] * cm_trades["price"]).sum())
    assert day_usd == pytest.approx(cm_trades["contracts"].sum() * 100, rel=1e-12)
    assert (cm_bars["whale_buy_volume"] <= cm_bars["taker_buy_volume"] + 1e-12).all()
    assert (cm_bars["whale_sell_volume"] <= cm_bars["taker_sell_volume"] + 1e-12).all()


def test_cm_day_print_rules_and_trade_level_bursts(cm_trades: pd.DataFrame, cm_detected: pd.DataFrame) -> None:
    flags = {rule: detect_bursts(cm_trades, dataclasses.replace(CFG, print_rule=rule))["whale"].to_numpy()
             for rule in ("notional", "multiple", "either")}
    both = cm_detected["whale"].to_numpy()
    assert (both == (flags["notional"] & flags["multiple"])).all()
    assert (flags["either"] == (flags["notional"] | flags["multiple"])).all()
    # independent: 100 kUSD = 1000 contracts exactly
    assert (flags["notional"] == (cm_trades["contracts"].to_numpy() >= 1000)).all()
    med = cm_detected["median_amount"] * cm_detected["price"]
    ev = burst_events(cm_detected)
    print(f"\n(b) COIN-M BTCUSD_PERP 2026-05-08: {len(cm_trades)} trades, median trade ~{med.median():,.0f} USD; "
          f"whale prints: both {int(both.sum())}, notional {int(flags['notional'].sum())}, "
          f"multiple {int(flags['multiple'].sum())}, either {int(flags['either'].sum())}; "
          f"trade-level bursts {len(ev)} ({int((ev['side'] == 'buy').sum())} buy, "
          f"{int((ev['side'] == 'sell').sum())} sell), first {ev['start'].iloc[0]:%H:%M:%S}, "
          f"biggest {ev.loc[ev['peak_net_notional'].abs().idxmax(), 'start']:%H:%M:%S} UTC")
    assert 0 < both.sum() <= flags["notional"].sum() < flags["multiple"].sum()
    assert (brute_force_bursts(cm_trades, both, CFG) == cm_detected["burst"].to_numpy()).all()
    assert len(ev) > 0


def independent_burst_bars(bars: pd.DataFrame, cfg: WhaleFollowerConfig) -> pd.Series:
    """The bar-level burst rule with pandas time-based rolling windows (floats, not integer cents)."""
    w, lb = f"{cfg.window_minutes}min", f"{cfg.window_minutes + cfg.lookback_minutes}min"
    net = ((bars["whale_buy_volume"] - bars["whale_sell_volume"]) * bars["close"]).rolling(w).sum()
    gross = (bars["whale_buy_volume"] + bars["whale_sell_volume"]) * bars["close"]
    one = pd.Series(1.0, index=bars.index)
    lb_sum = gross.rolling(lb).sum() - gross.rolling(w).sum()
    lb_n = one.rolling(lb).sum() - one.rolling(w).sum()
    norm = lb_sum / lb_n * cfg.window_minutes
    traded = (bars["volume"] * bars["close"]).rolling(w).sum()
    ok = ((net.abs() >= cfg.min_net_notional) & (net.abs() >= cfg.burst_ratio * norm)
          & (net.abs() >= cfg.min_whale_share * traded) & (lb_n * 2 >= cfg.lookback_minutes))
    return np.sign(net).where(ok, 0).astype(int)


def test_cm_day_burst_bars_match_an_independent_computation(cm_bars: pd.DataFrame) -> None:
    mine = whale_bursts(cm_bars, CFG)
    theirs = independent_burst_bars(cm_bars, CFG)
    assert (mine["burst"].astype(int) == theirs).all()
    np.testing.assert_allclose(mine["net_notional"],
                               ((cm_bars["whale_buy_volume"] - cm_bars["whale_sell_volume"]) * cm_bars["close"])
                               .rolling("3min").sum(), rtol=0, atol=0.02 * CFG.window_minutes)
    b = mine[mine["burst"] != 0]
    print(f"\n(b) burst bars {len(b)}: " + ", ".join(f"{t:%H:%M} {'BUY' if r.burst > 0 else 'SELL'} "
                                                    f"{r.net_notional / 1e6:+.2f}M x{r.ratio:.1f}"
                                                    for t, r in b.iterrows()))
    assert 5 <= len(b) <= 60  # rare: a handful of episodes on a day, not noise


def test_cm_day_default_gates_are_not_ready_and_say_so(cm_bars: pd.DataFrame) -> None:
    d = evaluate(cm_bars, CFG)
    burst_rows = whale_bursts(cm_bars, CFG)["burst"] != 0
    assert (d["side"] == 0).all()
    assert d.loc[burst_rows, "reason"].str.endswith("trend filter not ready -> no trade").all()
    assert TrendConfig().warmup_minutes > len(cm_bars)
    assert find_lookahead(evaluate, cm_bars, CFG) == []


def short_trend_ghost(bars: pd.DataFrame, cfg: WhaleFollowerConfig) -> pd.DataFrame:
    """The whale follower with the short-horizon trend gate (CVD with its default config)."""
    return evaluate(bars, cfg, trend=trend_state(bars, SHORT_TREND))


def test_cm_day_full_follow_logic(cm_bars: pd.DataFrame) -> None:
    ts = trend_state(cm_bars, SHORT_TREND)
    cv = cvd_state(cm_bars, CvdConfig())
    d = evaluate(cm_bars, CFG, trend=ts, cvd=cv)
    st = whale_bursts(cm_bars, CFG)
    sig = d[d["side"] != 0]
    burst = st["burst"] != 0
    reasons = d.loc[burst, "reason"]
    kinds = {k: int(reasons.str.contains(k).sum()) for k in
             ("not ready", "blocks", "disagrees", "CVD unknown", "edge-triggered", "-> follow")}
    print(f"\n(b) follow logic with the short-horizon trend gate: {int(burst.sum())} burst bars -> "
          f"{len(sig)} signals ({int((sig['side'] > 0).sum())} long, {int((sig['side'] < 0).sum())} short); "
          f"burst bars by outcome {kinds}")
    close = cm_bars["close"]
    for t, r in sig.iterrows():
        fwd = close[t:t + pd.Timedelta(minutes=30)]
        move = (fwd.iloc[-1] / r["entry"] - 1) * 100 * r["side"]
        print(f"    {t:%Y-%m-%d %H:%M} UTC {'LONG' if r['side'] > 0 else 'SHORT'} entry {r['entry']:.1f} "
              f"stop {r['stop']:.1f} target {r['target']:.1f} conf {r['confidence']:.2f} size x{r['size_mult']:.2f}"
              f" | close 30 min later {move:+.2f}% in the trade's favour | {r['reason']}")
    assert len(sig) >= 1
    assert (st.loc[sig.index, "burst"].to_numpy() == sig["side"].to_numpy()).all()
    longs, shorts = sig[sig["side"] > 0].index, sig[sig["side"] < 0].index
    assert ts.loc[longs, "allow_long"].all() and ts.loc[shorts, "allow_short"].all()
    assert (cv.loc[longs, "cvd"] > 0).all() and (cv.loc[shorts, "cvd"] < 0).all()
    assert (sig["entry"] == close.loc[sig.index]).all()
    s = sig["side"]
    assert ((sig["stop"] - sig["entry"]) * s < 0).all() and ((sig["target"] - sig["entry"]) * s > 0).all()
    assert ((sig["stop"] / sig["entry"] - 1).abs() >= CFG.min_stop_pct / 100 - 1e-12).all()
    assert ((sig["target"] / sig["entry"] - 1).abs() >= CFG.min_target_pct / 100 - 1e-12).all()
    # edge trigger: no two signals within the cooldown
    assert (np.diff(sig.index.as_unit("s").asi8) > CFG.cooldown_minutes * 60).all()
    # every burst bar says what happened to it
    assert reasons.str.len().gt(0).all() and sum(kinds.values()) >= int(burst.sum())


def test_cm_day_no_lookahead_and_live_equals_backtest(cm_bars: pd.DataFrame) -> None:
    assert find_lookahead(short_trend_ghost, cm_bars, CFG) == []
    full = short_trend_ghost(cm_bars, CFG)
    warm = CFG.cooldown_minutes + max(CFG.own_warmup_minutes, SHORT_TREND.warmup_minutes,
                                      CvdConfig().warmup_minutes) + 1
    rows = np.flatnonzero(whale_bursts(cm_bars, CFG)["burst"].to_numpy() != 0)
    checked = 0
    for i in rows:
        t = cm_bars.index[i]
        if t - pd.Timedelta(minutes=warm - 1) < cm_bars.index[0]:
            continue
        window = cm_bars.loc[t - pd.Timedelta(minutes=warm - 1): t]
        pd.testing.assert_series_equal(short_trend_ghost(window, CFG).iloc[-1], full.iloc[i], check_names=False)
        checked += 1
    print(f"\n(b) live window ({warm} min) == backtest at {checked} burst bars")
    assert checked >= 3
