"""The liquidation hunter on REAL data: Binance USDT-M BTCUSDT force orders of 2025-06-23 20:59-21:56 UTC
(two consecutive recordings of the !forceOrder@arr stream) joined to the real USDT-M BTCUSDT 1m bars of
the same minutes (freqtrade download, OHLCV only: no taker split, so CVD is unknown on these bars).

Outside the recorded minutes the liquidation columns are NaN (no feed), never 0. Run with -s to see the
cascades, thresholds and drafts it finds; the assertions are properties an independent pandas
computation or the raw force orders can falsify.
"""

import numpy as np
import pandas as pd
import pytest

from apps.engine.exits import simulate_trade
from apps.engine.fills import fill_model_for
from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.liquidation_hunter import NO_FEED_REASON, LiquidationHunterConfig, cascade_state, evaluate
from apps.engine.registry import GHOSTS, latest_draft, warmup_minutes_for
from apps.engine.types import Draft
from tests.datafiles import _flush_redis, load_freqtrade_1m, require, services_use_test_redis  # noqa: F401

PERP_1M = "klines/freqtrade/binance_usdm_BTCUSDT_perp_1m_2025-05-25_2025-06-24__thesnowguru.csv.gz"
FORCE_ORDERS = ("liquidations/binance_usdm_forceorder_2025-06-23_2059-2122.csv",
                "liquidations/binance_usdm_forceorder_2025-06-23_2122-2156.csv")
# No header (shared/data/README.md). average_price is the literal text "None" in these files.
FO_COLUMNS = ["symbol", "side", "order_type", "time_in_force", "original_quantity", "price", "average_price",
              "order_status", "last_filled_quantity", "accumulated_filled_quantity", "order_trade_time",
              "usd_size"]
JUNK_PREFIX = "Hello Arbitrage Trading Bot"  # glued to the first symbol of the first file
CFG = LiquidationHunterConfig()
WINDOW = slice("2025-06-23 20:50", "2025-06-23 22:05")


def load_force_orders() -> pd.DataFrame:
    """All force orders of both files: ts (UTC), symbol (BTC = BTCUSDT), side, qty (base), price."""
    frames = [pd.read_csv(require(p), header=None, names=FO_COLUMNS, dtype={"symbol": str, "side": str})
              for p in FORCE_ORDERS]
    raw = pd.concat(frames, ignore_index=True)
    sym = raw["symbol"].str.removeprefix(JUNK_PREFIX)
    # perpetuals are "BTC", "ETH", ...; delivery contracts carry their expiry ("BTC_250627") and are other
    # instruments: the exact match in bars_with_liquidations keeps them out of BTCUSDT perp bars
    assert sym.str.fullmatch(r"[0-9A-Z]+(_\d{6})?").all(), "unexpected symbol text after cleaning"
    return pd.DataFrame({"ts": pd.to_datetime(raw["order_trade_time"], unit="ms", utc=True), "symbol": sym,
                         "side": raw["side"], "qty": raw["accumulated_filled_quantity"].astype(float),
                         "price": raw["price"].astype(float)})


def feed_minutes(orders: pd.DataFrame) -> pd.DatetimeIndex:
    """Whole minutes the recorder observed from start to end: the first and last minutes are partial
    (recording started at :38 and stopped at :35), so they count as unknown rather than guessed."""
    first = orders["ts"].min().ceil("1min")
    last = orders["ts"].max().floor("1min") - pd.Timedelta(minutes=1)
    return pd.date_range(first, last, freq="1min")


def bars_with_liquidations(symbol: str = "BTC") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(bars, the symbol's force orders): real 1m perp bars plus liq_long_volume (SELL orders = longs
    liquidated) and liq_short_volume (BUY) per minute in base units; 0 in observed minutes without
    liquidations, NaN wherever the recorder was not running."""
    orders = load_force_orders()
    known = feed_minutes(orders)
    own = orders[orders["symbol"] == symbol]
    minute = own["ts"].dt.floor("1min")
    bars = load_freqtrade_1m(PERP_1M)
    for col, side in (("liq_long_volume", "SELL"), ("liq_short_volume", "BUY")):
        per_min = own.loc[own["side"] == side, "qty"].groupby(minute[own["side"] == side]).sum()
        bars[col] = per_min.reindex(known, fill_value=0.0).reindex(bars.index)
    return bars, own


@pytest.fixture(scope="module")
def real() -> tuple[pd.DataFrame, pd.DataFrame]:
    return bars_with_liquidations()


@pytest.fixture(scope="module")
def drafts(real: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return evaluate(real[0], CFG)


def test_loader_reads_the_recordings_as_documented(real: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bars, btc = real
    assert len(btc) == 57 and (btc["symbol"] == "BTC").all()
    assert set(btc["side"]) == {"BUY", "SELL"}
    known = bars["liq_long_volume"].notna()
    assert known.sum() == 56  # 21:00 .. 21:55
    assert bars.index[known][0] == pd.Timestamp("2025-06-23 21:00", tz="UTC")
    # README: every BTC force-order price lies within its 1m bar's [low, high] +- 0.5 % (independent check)
    b = bars.loc[btc["ts"].dt.floor("1min")]
    assert ((btc["price"].to_numpy() >= b["low"].to_numpy() * 0.995)
            & (btc["price"].to_numpy() <= b["high"].to_numpy() * 1.005)).all()
    # the per-minute columns hold every observed BTC quantity (only the partial 20:59 minute is left out)
    in_feed = btc["ts"].dt.floor("1min").isin(bars.index[known])
    total = bars["liq_long_volume"].sum() + bars["liq_short_volume"].sum()
    assert total == pytest.approx(btc.loc[in_feed, "qty"].sum())


def test_cascades_found_on_real_liquidations(real: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bars, btc = real
    st = cascade_state(bars, CFG)
    # independent: per-minute notional from the raw orders (qty x the order's own price), 3-minute sums
    btc = btc.assign(usd=btc["qty"] * btc["price"], minute=btc["ts"].dt.floor("1min"))
    per_min = btc.pivot_table(index="minute", columns="side", values="usd", aggfunc="sum").fillna(0.0)
    known = bars.index[bars["liq_long_volume"].notna()]
    per_min = per_min.reindex(known, fill_value=0.0)
    print("\nBTCUSDT force orders per minute (USD, raw order prices), non-zero minutes:")
    print(per_min[(per_min > 0).any(axis=1)].round(0).to_string())
    roll = per_min.rolling("3min").sum()
    mine = st.loc[known, ["long_window_usd", "short_window_usd"]]
    full = mine.notna().all(axis=1)  # the first two feed minutes have no complete 3-minute window
    assert full.sum() == len(known) - 2
    # the bar converts base volume at its close, the independent sum at each order's price: within 0.5 %
    np.testing.assert_allclose(mine.loc[full, "long_window_usd"], roll.loc[full, "SELL"], rtol=5e-3, atol=1.0)
    np.testing.assert_allclose(mine.loc[full, "short_window_usd"], roll.loc[full, "BUY"], rtol=5e-3, atol=1.0)

    casc = st[st["cascade"] != 0]
    print(f"\ncascade bars (min_cascade_usd {CFG.min_cascade_usd:,.0f}, {CFG.norm_multiple:g}x norm, "
          f"{CFG.window_minutes}-min window):")
    print(casc[["long_usd", "short_usd", "long_window_usd", "short_window_usd", "long_threshold_usd",
                "short_threshold_usd", "cascade"]].round(0).to_string())
    # only where the feed is known, never outside the recording
    assert casc.index.isin(known).all()
    # the minute with the largest liquidated notional (21:15, shorts) is a cascade bar of that side
    top = per_min.max(axis=1).idxmax()
    assert top == pd.Timestamp("2025-06-23 21:15", tz="UTC")
    assert st.loc[top, "cascade"] == (-1 if per_min.loc[top, "BUY"] > per_min.loc[top, "SELL"] else 1)
    # both sides occur: the real data has a short squeeze (21:13-21:17) and a long flush (21:27)
    assert set(casc["cascade"]) == {-1, 1}
    # every cascade bar's window reaches its threshold, and every complete window below the floor is not one
    w = np.where(casc["cascade"] > 0, casc["long_window_usd"], casc["short_window_usd"])
    t = np.where(casc["cascade"] > 0, casc["long_threshold_usd"], casc["short_threshold_usd"])
    assert (w >= t).all() and (t >= CFG.min_cascade_usd).all()
    small = st.loc[known][(st.loc[known, ["long_window_usd", "short_window_usd"]].max(axis=1) < CFG.min_cascade_usd)]
    assert (small["cascade"] == 0).all() and len(small) > 40


def test_drafts_on_the_real_window(real: tuple[pd.DataFrame, pd.DataFrame], drafts: pd.DataFrame) -> None:
    bars, _ = real
    known = bars["liq_long_volume"].notna().to_numpy()
    reasons = drafts["reason"].to_numpy()
    assert (reasons[~known] == NO_FEED_REASON).all() and (~known).sum() == len(bars) - 56
    shown = drafts.loc[WINDOW]
    shown = shown[(shown["reason"] != "") & (shown["reason"] != NO_FEED_REASON)]
    print(f"\ndrafts ({CFG.mode}) with a reason in the recorded window:")
    for t, r in shown.iterrows():
        print(f"  {t:%H:%M} side {int(r['side']):+d} conf {r['confidence']:.2f} size {r['size_mult']:.2f} "
              f"entry {r['entry']:.1f} stop {r['stop']:.1f} target {r['target']:.1f}: {r['reason']}")
    st = cascade_state(bars, CFG)
    casc = st["cascade"].to_numpy()
    # every cascade bar says what happened to it; no bar outside a cascade trades
    assert all(reasons[casc != 0] != "")
    sig = drafts[drafts["side"] != 0]
    assert (casc[drafts["side"].to_numpy() != 0] != 0).all()
    # fade: the trade opposes the move the liquidations made (longs liquidated -> LONG)
    assert (sig["side"].to_numpy() == st.loc[sig.index, "cascade"].to_numpy()).all()
    # the freqtrade bars carry no taker split: no signal can claim a CVD confirmation
    assert not sig["reason"].str.contains("CVD confirms").any()
    assert drafts.loc[casc != 0, "reason"].str.contains("CVD unknown|wait for exhaustion|cooldown").all()
    # each side's cascade is faded on the first bar after its peak liquidation minute (the flow halved
    # there in both real cascades), unless the trend filter blocks it; peaks from the raw order sizes
    btc = real[1]
    for side, casc_sign in (("BUY", -1), ("SELL", 1)):
        mins = btc.loc[btc["side"] == side].assign(usd=lambda x: x["qty"] * x["price"])
        per_min = mins.groupby(mins["ts"].dt.floor("1min"))["usd"].sum()
        peak = per_min.idxmax()
        nxt = peak + pd.Timedelta(minutes=1)
        assert st.loc[peak, "cascade"] == casc_sign
        if "blocks" not in drafts.loc[nxt, "reason"]:
            assert drafts.loc[nxt, "side"] == casc_sign, (side, nxt, drafts.loc[nxt, "reason"])
            assert (sig["side"] == casc_sign).sum() == 1
    fm = fill_model_for("binance")
    for i in np.flatnonzero(drafts["side"].to_numpy() != 0):
        d = drafts.iloc[i]
        o = simulate_trade(bars, int(i), int(d["side"]), d["entry"], d["stop"], d["target"], d["max_hold_s"], fm)
        print(f"  trade from {bars.index[i]:%H:%M}: {o.side:+d} in {o.entry_price:.1f} at {o.entry_time:%H:%M}, "
              f"out {o.exit_price:.1f} at {o.exit_time:%H:%M} ({o.reason}), "
              f"net {o.net_pnl / o.entry_price * 100:+.3f} % (1 unit, binance fees + 5 bps)")
    print(f"signals: {len(sig)} ({int((sig['side'] > 0).sum())} long, {int((sig['side'] < 0).sum())} short)")


def test_follow_mode_and_require_cvd_on_the_real_window(real: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    bars, _ = real
    st = cascade_state(bars, CFG)
    follow = evaluate(bars, LiquidationHunterConfig(mode="follow"))
    sig = follow[follow["side"] != 0]
    for t, r in sig.iterrows():
        print(f"\nfollow {t:%H:%M} side {int(r['side']):+d}: {r['reason']}")
    assert (sig["side"].to_numpy() == -st.loc[sig.index, "cascade"].to_numpy()).all()
    strict = evaluate(bars, LiquidationHunterConfig(require_cvd=True))
    assert (strict["side"] == 0).all()
    casc = st["cascade"].to_numpy() != 0
    refused = strict.loc[casc, "reason"]
    assert refused.str.contains("CVD unknown").any()
    assert refused.str.contains("CVD unknown|wait for exhaustion|cooldown").all()


def test_no_lookahead_and_live_equals_backtest_on_real_data(real: tuple[pd.DataFrame, pd.DataFrame],
                                                             drafts: pd.DataFrame) -> None:
    bars, _ = real
    win_rows = np.flatnonzero((bars.index >= "2025-06-23 20:58") & (bars.index <= "2025-06-23 21:58"))
    cuts = sorted({int(i) + 1 for i in win_rows} | {len(bars) // 2, len(bars)})
    assert find_lookahead(evaluate, bars, CFG, cuts=cuts) == []
    warm = CFG.warmup_minutes
    for i in win_rows:
        t = bars.index[i]
        live = evaluate(bars.loc[t - pd.Timedelta(minutes=warm - 1): t], CFG).iloc[[-1]]
        pd.testing.assert_frame_equal(live, drafts.iloc[[i]], check_exact=True, obj=f"live vs backtest at {t}")


def test_registry_live_draft_on_the_real_window(real: tuple[pd.DataFrame, pd.DataFrame],
                                                drafts: pd.DataFrame) -> None:
    """The Django side's path: latest_draft on the registry's live window gives the backtest's signals."""
    bars, _ = real
    warm = warmup_minutes_for("liquidation_hunter", {})
    assert warm == CFG.warmup_minutes == GHOSTS["liquidation_hunter"].warmup_minutes
    for i in np.flatnonzero(drafts["side"].to_numpy() != 0):
        t = bars.index[i]
        got = latest_draft("liquidation_hunter", {}, bars.loc[t - pd.Timedelta(minutes=warm - 1): t])
        assert got == Draft.from_row(t, drafts.iloc[i])
    t = pd.Timestamp("2025-06-23 21:40", tz="UTC")
    assert latest_draft("liquidation_hunter", {}, bars.loc[:t]) is None
    summary = GHOSTS["liquidation_hunter"].summary(bars.loc[:t], CFG)
    assert summary["feed"] == "live" and summary["last_cascade"] == "2025-06-23 21:29 UTC"
    assert summary["last_cascade_side"] == "longs liquidated"
    print(f"\nstate_summary at {t:%H:%M}: {summary}")


def test_guarded_run_leaves_real_input_alone(real: tuple[pd.DataFrame, pd.DataFrame], drafts: pd.DataFrame) -> None:
    bars, _ = real
    before = bars.copy(deep=True)
    res = run_guarded(evaluate, bars, CFG)
    assert res.ok, res.error
    assert res.drafts.equals(drafts)
    assert bars.equals(before)
