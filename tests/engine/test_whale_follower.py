"""Whale follower on constructed trades and bars: print rules, bursts, the bar-level ghost and its gates,
config validation, no look-ahead, live == backtest, inputs untouched.

The real-data checks are in test_whale_follower_real.py.
"""

import dataclasses
from collections import deque
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.engine.cvd import CvdConfig, cvd_state
from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.registry import GHOSTS, latest_draft, warmup_minutes_for
from apps.engine.trend import TrendConfig, trend_state
from apps.engine.types import DRAFT_COLUMNS, ConfigError, Draft
from apps.engine.whale_follower import (
    NO_TRADE_SIZES,
    TradesError,
    WhaleFollowerConfig,
    burst_events,
    detect_bursts,
    evaluate,
    state_summary,
    whale_bursts,
    whale_volumes,
)
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

CFG = WhaleFollowerConfig()
T0 = pd.Timestamp("2025-03-01 00:00", tz="UTC")


# -- trade level --------------------------------------------------------------------------------------

def trades_frame(rows: list[tuple[float, float, float, str]]) -> pd.DataFrame:
    """(seconds after T0, price, amount, taker side) -> a trades frame."""
    return pd.DataFrame({
        "ts": [T0 + pd.Timedelta(seconds=s) for s, _, _, _ in rows],
        "price": [p for _, p, _, _ in rows],
        "amount": [a for _, _, a, _ in rows],
        "side": [sd for _, _, _, sd in rows],
    })


def background(n: int = 100, start_s: float = 0.0, amount: float = 0.01) -> list[tuple[float, float, float, str]]:
    """n small trades (0.01 BTC at 100k = 1 kUSD), alternating sides, one per second."""
    return [(start_s + i, 100_000.0, amount, "buy" if i % 2 else "sell") for i in range(n)]


def test_print_rules_notional_multiple_both_either() -> None:
    # median 0.01 BTC; whale_notional 50k, multiple 100:
    #   P 0.6 BTC @100k = 60 kUSD, x60   -> notional only
    #   Q 1.5 BTC @100k = 150 kUSD, x150 -> both
    #   S 2.0 BTC @20k  = 40 kUSD, x200  -> multiple only
    #   U 0.3 BTC @100k = 30 kUSD, x30   -> neither
    rows = background(100) + [(101, 100_000.0, 0.6, "buy"), (102, 100_000.0, 1.5, "buy"),
                              (103, 20_000.0, 2.0, "sell"), (104, 100_000.0, 0.3, "buy")]
    tr = trades_frame(rows)
    base = WhaleFollowerConfig(whale_notional=50_000.0, median_multiple=100.0)
    expected = {"notional": [True, True, False, False], "both": [False, True, False, False],
                "multiple": [False, True, True, False], "either": [True, True, True, False]}
    for rule, flags in expected.items():
        d = detect_bursts(tr, dataclasses.replace(base, print_rule=rule))
        assert d["whale"].iloc[-4:].tolist() == flags, rule
        assert not d["whale"].iloc[:100].any()
    d = detect_bursts(tr, base)
    assert d["median_amount"].iloc[-1] == pytest.approx(0.01)
    assert d["size_multiple"].iloc[-3] == pytest.approx(150.0)
    assert d["notional"].iloc[-3] == pytest.approx(150_000.0)


def test_median_needs_enough_trades_and_is_measured_in_time() -> None:
    cfg = WhaleFollowerConfig(print_rule="both")
    # first 10 trades: fewer than median_min_trades (50) in the window -> median unknown -> no whale,
    # although the 3rd is 2 BTC = 200 kUSD; with the notional rule it is one.
    rows = background(10)
    rows[2] = (2, 100_000.0, 2.0, "buy")
    d = detect_bursts(trades_frame(rows), cfg)
    assert d["median_amount"].isna().all() and not d["whale"].any()
    assert detect_bursts(trades_frame(rows), dataclasses.replace(cfg, print_rule="notional"))["whale"].iloc[2]
    # 60 trades of 1 BTC, then 20 minutes later 60 trades of 0.01 BTC and a 1.2 BTC print: the old trades
    # have left the 15-minute window, so the median is 0.01 and the print is x120 (a 120-sample window
    # would still hold the 1 BTC trades and see x1.2).
    rows = [(i, 100_000.0, 1.0, "buy") for i in range(60)] + background(60, start_s=1200)
    rows.append((1300, 100_000.0, 1.2, "buy"))
    d = detect_bursts(trades_frame(rows), cfg)
    assert d["median_amount"].iloc[-1] == pytest.approx(0.01)
    assert d["whale"].iloc[-1] and d["whale"].sum() == 1


def test_exact_threshold_print_of_an_inverse_contract_counts() -> None:
    # COIN-M: 1000 contracts of 100 USD at 79,972.8 -> amount 100000/79972.8 BTC; price * amount
    # rounds to 99999.99999999999 in floats; it is a 100 kUSD print.
    price = 79_972.8
    rows = [(0, price, 1000 * 100 / price, "buy")]
    d = detect_bursts(trades_frame(rows), WhaleFollowerConfig(print_rule="notional"))
    assert d["whale"].iloc[0]


def whale(s: float, usd: float, side: str) -> tuple[float, float, float, str]:
    return (s, 100_000.0, usd / 100_000.0, side)


NOTIONAL = WhaleFollowerConfig(print_rule="notional")  # 100k prints, burst: 3 net prints or 500k net in 60 s


def test_burst_by_count_is_net_of_the_other_side() -> None:
    rows = [whale(0, 150_000, "buy"), whale(10, 150_000, "buy"), (15, 100_000.0, 0.01, "buy"),
            whale(20, 150_000, "buy"), whale(25, 150_000, "buy")]
    d = detect_bursts(trades_frame(rows), NOTIONAL)
    assert d["burst"].tolist() == [0, 0, 0, 1, 1]  # third print: 3 net prints (450k < 500k)
    assert d["burst_start"].tolist() == [False, False, False, True, False]
    assert d["net_prints"].iloc[3] == 3 and d["net_notional"].iloc[3] == 450_000.0
    # one whale SELL inside the window: 3 buys - 1 sell = 2 net prints, 300k net -> no burst
    rows = [whale(0, 150_000, "buy"), whale(5, 150_000, "sell"), whale(10, 150_000, "buy"),
            whale(20, 150_000, "buy")]
    d = detect_bursts(trades_frame(rows), NOTIONAL)
    assert (d["burst"] == 0).all()
    assert d[["buy_prints", "sell_prints", "net_prints"]].iloc[-1].tolist() == [3, 1, 2]


def test_burst_by_notional_and_conflicts() -> None:
    d = detect_bursts(trades_frame([whale(0, 300_000, "sell"), whale(30, 300_000, "sell")]), NOTIONAL)
    assert d["burst"].tolist() == [0, -1] and d["net_notional"].iloc[-1] == -600_000.0
    # 4 buys of 101k (a buy burst from the 3rd), then one 450k sell: net count 3 points up, the net
    # notional (-46k) down: a conflict, not a burst
    rows = [whale(i, 101_000, "buy") for i in range(4)] + [whale(5, 450_000, "sell")]
    d = detect_bursts(trades_frame(rows), NOTIONAL)
    assert d["net_prints"].iloc[-1] == 3 and d["net_notional"].iloc[-1] == -46_000.0
    assert d["burst"].tolist() == [0, 0, 1, 1, 0]


def test_burst_window_is_trade_time() -> None:
    # prints 40 s apart: the window (t - 60 s, t] never holds three of them
    rows = [whale(40 * i, 150_000, "buy") for i in range(6)]
    assert (detect_bursts(trades_frame(rows), NOTIONAL)["burst"] == 0).all()
    rows = [whale(25 * i, 150_000, "buy") for i in range(6)]  # 25 s apart: three within 60 s
    d = detect_bursts(trades_frame(rows), NOTIONAL)
    assert d["burst"].tolist() == [0, 0, 1, 1, 1, 1]
    assert d["buy_prints"].tolist() == [1, 2, 3, 3, 3, 3]


def test_burst_events_one_row_per_run() -> None:
    rows = ([whale(25 * i, 150_000, "buy") for i in range(5)]                # buy burst from the 3rd print
            + [whale(600 + 10 * i, 200_000, "sell") for i in range(3)])      # sell burst at 600k
    ev = burst_events(detect_bursts(trades_frame(rows), NOTIONAL))
    assert ev["side"].tolist() == ["buy", "sell"]
    assert ev["prints"].tolist() == [3, 1]  # the sell side reaches 600k at its third print
    assert ev["start"].iloc[0] == T0 + pd.Timedelta(seconds=50)
    assert ev["end"].iloc[0] == T0 + pd.Timedelta(seconds=100)
    assert ev["net_notional_at_start"].tolist() == [450_000.0, -600_000.0]
    assert ev["peak_net_notional"].tolist() == [450_000.0, -600_000.0]
    assert burst_events(detect_bursts(trades_frame(background(5)), NOTIONAL)).empty


def random_trades(n: int = 1500, seed: int = 1) -> pd.DataFrame:
    """Heavy-tailed sizes, irregular times with same-millisecond ties, both sides."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(0.8, n) * (rng.random(n) > 0.1)  # ~10 % ties
    t_ms = np.floor(np.cumsum(gaps) * 1000).astype(np.int64)
    return pd.DataFrame({
        "ts": pd.to_datetime(t_ms, unit="ms", utc=True) + pd.Timedelta(days=20000),
        "price": 100_000 * np.exp(np.cumsum(rng.normal(0, 2e-4, n))),
        "amount": np.round(rng.pareto(1.1, n) * 0.01 + 0.001, 3),
        "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
    })


def test_detect_bursts_matches_a_brute_force_loop() -> None:
    tr = random_trades()
    cfg = WhaleFollowerConfig(median_window_minutes=2, median_min_trades=20, median_multiple=20.0,
                              whale_notional=20_000.0, burst_min_notional=60_000.0, burst_seconds=30.0,
                              burst_min_prints=2)
    d = detect_bursts(tr, cfg)
    ts = tr["ts"].to_numpy()
    amount, price, side = tr["amount"].to_numpy(), tr["price"].to_numpy(), tr["side"].to_numpy()
    win: deque[int] = deque()
    whales: deque[int] = deque()
    is_whale = np.zeros(len(tr), dtype=bool)
    for i in range(len(tr)):
        win.append(i)
        while ts[win[0]] <= ts[i] - np.timedelta64(2, "m"):
            win.popleft()
        med = np.median(amount[list(win)]) if len(win) >= 20 else np.nan
        notional = price[i] * amount[i]
        is_whale[i] = notional >= 20_000.0 * (1 - 1e-9) and amount[i] >= 20.0 * med
        if not np.isnan(med):
            assert d["median_amount"].iat[i] == pytest.approx(med, rel=1e-12)
        if is_whale[i]:
            whales.append(i)
        while whales and ts[whales[0]] <= ts[i] - np.timedelta64(30, "s"):
            whales.popleft()
        nb = sum(1 for j in whales if side[j] == "buy")
        ns = len(whales) - nb
        net = sum((1 if side[j] == "buy" else -1) * price[j] * amount[j] for j in whales)
        want = 0
        if is_whale[i] and net > 0 and (nb - ns >= 2 or net >= 60_000.0):
            want = 1
        elif is_whale[i] and net < 0 and (ns - nb >= 2 or -net >= 60_000.0):
            want = -1
        assert d["burst"].iat[i] == want, i
        assert d["net_prints"].iat[i] == nb - ns
        assert d["net_notional"].iat[i] == pytest.approx(net, abs=0.02)  # cents
    assert (d["whale"].to_numpy() == is_whale).all()
    assert is_whale.sum() >= 20 and (d["burst"] != 0).sum() >= 5  # the case exercises the rules


def test_detect_bursts_is_causal_and_leaves_input_alone() -> None:
    tr = random_trades(seed=2)
    cfg = WhaleFollowerConfig(median_window_minutes=2, median_min_trades=20, median_multiple=20.0,
                              whale_notional=20_000.0, burst_min_notional=60_000.0, burst_seconds=30.0)
    before = tr.copy(deep=True)
    full = detect_bursts(tr, cfg)
    pd.testing.assert_frame_equal(tr, before)
    for cut in (1, 37, 400, 777, 1200, len(tr)):
        pd.testing.assert_frame_equal(detect_bursts(tr.iloc[:cut], cfg), full.iloc[:cut])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop(columns="side"), "trades lack column(s): side"),
        (lambda t: t.assign(ts=t["ts"].dt.tz_localize(None)), "tz-aware UTC"),
        (lambda t: t.iloc[::-1], "must be sorted by ts"),
        (lambda t: t.assign(side="BUY"), "must be 'buy' or 'sell'"),
        (lambda t: t.assign(amount=0.0), "trades.amount must be finite and > 0"),
        (lambda t: t.assign(price=np.nan), "trades.price must be finite and > 0"),
    ],
)
def test_bad_trades_are_refused(mutate, message: str) -> None:
    with pytest.raises(TradesError) as err:
        detect_bursts(mutate(trades_frame(background(5))), CFG)
    assert message in str(err.value)


def test_whale_volumes_per_minute_and_side() -> None:
    rows = [whale(10, 150_000, "buy"), whale(20, 150_000, "sell"), (30, 100_000.0, 0.01, "buy"),
            whale(70, 200_000, "buy"), (200, 100_000.0, 0.01, "sell")]
    v = whale_volumes(trades_frame(rows), NOTIONAL)
    assert v.index.tolist() == [T0, T0 + pd.Timedelta(minutes=1), T0 + pd.Timedelta(minutes=3)]
    assert v["whale_buy_volume"].tolist() == [1.5, 2.0, 0.0]
    assert v["whale_sell_volume"].tolist() == [1.5, 0.0, 0.0]


# -- bar level: constructed bars ----------------------------------------------------------------------

PRICE = 100_000.0


def quiet_bars(n: int = 300) -> pd.DataFrame:
    """Flat 100k bars, 10 BTC/min split evenly, 100 trades, 0.5 BTC whale buying AND selling each minute
    (gross whale notional 100k/min, net 0: the norm per 3-minute window is exactly 300k)."""
    idx = pd.date_range(T0, periods=n, freq="1min", tz="UTC")
    return pd.DataFrame({
        "open": PRICE, "high": PRICE * 1.0002, "low": PRICE * 0.9998, "close": PRICE, "volume": 10.0,
        "taker_buy_volume": 5.0, "taker_sell_volume": 5.0, "trades": 100.0,
        "whale_buy_volume": 0.5, "whale_sell_volume": 0.5,
    }, index=idx)


def add_burst(bars: pd.DataFrame, i: int, side: int, btc: float = 20.0, extra_volume: float = 20.0) -> None:
    """Whale prints of `btc` on one side at row i (taker and total volume grow with them)."""
    col = "whale_buy_volume" if side > 0 else "whale_sell_volume"
    taker = "taker_buy_volume" if side > 0 else "taker_sell_volume"
    bars.iloc[i, bars.columns.get_loc(col)] += btc
    bars.iloc[i, bars.columns.get_loc(taker)] += extra_volume
    bars.iloc[i, bars.columns.get_loc("volume")] += extra_volume


def gates(bars: pd.DataFrame, *, allow_long: bool = True, allow_short: bool = True, cvd: float = 1.0,
          available: bool = True, atr_pct: float = 0.2, confidence: float = 0.5, size: float = 1.0,
          direction: int = 0, ready: bool = True) -> dict[str, pd.DataFrame]:
    """Constructed gate states (the documented trend_state / cvd_state columns) on the bars' index."""
    n = len(bars)
    trend = pd.DataFrame({
        "direction": np.full(n, direction, dtype=np.int8), "regime": np.zeros(n, dtype=np.int8),
        "confidence": confidence, "allow_long": allow_long, "allow_short": allow_short,
        "size_mult_long": size if allow_long else 0.0, "size_mult_short": size if allow_short else 0.0,
        "atr_pct": atr_pct, "ready": ready}, index=bars.index)
    cv = pd.DataFrame({"delta": 0.0, "cvd": cvd, "available": available}, index=bars.index)
    return {"trend": trend, "cvd": cv}


def last(d: pd.DataFrame) -> pd.Series:
    return d.iloc[-1]


def test_whale_buy_burst_is_followed_long_with_atr_levels() -> None:
    bars = quiet_bars()
    add_burst(bars, -1, +1)  # net 20 BTC = 2.0M in the window; norm 300k -> x6.67; share 2M / 5M
    st = whale_bursts(bars, CFG).iloc[-1]
    assert st["net_notional"] == 2_000_000.0 and st["norm"] == 300_000.0
    assert st["ratio"] == pytest.approx(2_000_000 / 300_000) and st["share"] == pytest.approx(20 / 50)
    assert st["burst"] == 1
    d = evaluate(bars, CFG, **gates(bars, atr_pct=0.2, confidence=0.5, size=1.2))
    assert tuple(d.columns) == DRAFT_COLUMNS and d.index.equals(bars.index)
    row = last(d)
    assert row["side"] == 1 and row["entry"] == PRICE
    assert row["stop"] == pytest.approx(PRICE * (1 - 0.004))    # max(2 x 0.2 %, 0.3 %)
    assert row["target"] == pytest.approx(PRICE * (1 + 0.006))  # max(3 x 0.2 %, 0.5 %)
    conf = 0.5 + 0.25 * (2_000_000 / 300_000 / 5 - 1) + 0.15 * min(0.4 / 0.2 - 1, 1) + 0.10 * 0.5
    assert row["confidence"] == pytest.approx(conf)
    assert row["size_mult"] == pytest.approx((0.7 + 0.3 * conf) * 1.2)
    assert row["priority"] == 2 and row["max_hold_s"] == 1800.0
    assert row["reason"] == ("whale BUY flow: net +2.00M in 3 min, 100 trades this bar = x6.7 the norm 300k/3 min "
                             "over 240 min, 40% of traded notional; trend neutral (confidence 0.50); "
                             "CVD +1 base agrees -> follow LONG")
    assert (d["side"].iloc[:-1] == 0).all() and (d["reason"].iloc[:-1] == "").all()


def test_whale_sell_burst_is_followed_short_and_floors_apply() -> None:
    bars = quiet_bars()
    add_burst(bars, -1, -1)
    row = last(evaluate(bars, CFG, **gates(bars, cvd=-3.0, atr_pct=0.05)))
    assert row["side"] == -1
    assert row["stop"] == pytest.approx(PRICE * 1.003) and row["target"] == pytest.approx(PRICE * 0.995)
    assert row["reason"].endswith("CVD -3 base agrees -> follow SHORT")
    row = last(evaluate(bars, CFG, **gates(bars, cvd=-3.0, atr_pct=np.nan)))  # unknown ATR: floors only
    assert row["stop"] == pytest.approx(PRICE * 1.003) and row["target"] == pytest.approx(PRICE * 0.995)


@pytest.mark.parametrize(
    ("gate_kw", "says"),
    [
        ({"allow_long": False, "direction": -1},
         "trend weak down (confidence 0.50): trend filter blocks longs -> no trade"),
        ({"allow_long": False, "allow_short": False, "ready": False}, "trend filter not ready -> no trade"),
        ({"cvd": -5.0}, "CVD -5 base disagrees -> no trade"),
        ({"cvd": 0.0}, "CVD +0 base disagrees -> no trade"),
        ({"available": False}, "CVD unknown (no taker split in its window) -> no trade"),
        ({"cvd": np.nan}, "CVD unknown (no taker split in its window) -> no trade"),
    ],
)
def test_gates_block_with_a_reason(gate_kw: dict, says: str) -> None:
    bars = quiet_bars()
    add_burst(bars, -1, +1)
    row = last(evaluate(bars, CFG, **gates(bars, **gate_kw)))
    assert row["side"] == 0 and np.isnan(row["entry"])
    assert row["reason"].startswith("whale BUY flow: net +2.00M in 3 min") and row["reason"].endswith(says)


def test_a_short_is_blocked_by_an_up_trend_but_a_long_is_not() -> None:
    bars = quiet_bars()
    add_burst(bars, -1, -1)
    g = gates(bars, allow_short=False, direction=2, cvd=-1.0)
    assert "trend strong up" in last(evaluate(bars, CFG, **g))["reason"]
    assert last(evaluate(bars, CFG, **g))["side"] == 0
    bars = quiet_bars()
    add_burst(bars, -1, +1)
    assert last(evaluate(bars, CFG, **gates(bars, allow_short=False, direction=2)))["side"] == 1


def test_not_a_burst_ratio_floor_share() -> None:
    bars = quiet_bars()
    add_burst(bars, -1, +1, btc=12.0)  # 1.2M: above the 1M floor but x4 < x5
    row = last(evaluate(bars, CFG, **gates(bars)))
    assert row["side"] == 0 and row["reason"].endswith("ratio below x5 -> no burst")
    assert "x4.0 the norm" in row["reason"]
    bars = quiet_bars()
    add_burst(bars, -1, +1, btc=9.0)  # 900k: x3 and below the 1M floor -> not even worth a reason
    assert last(evaluate(bars, CFG, **gates(bars)))["reason"] == ""
    looser = dataclasses.replace(CFG, min_net_notional=500_000.0, burst_ratio=2.0, min_whale_share=0.1)
    assert last(evaluate(bars, looser, **gates(bars)))["side"] == 1  # 900k = x3, 18 % of the window
    bars = quiet_bars()
    add_burst(bars, -1, +1, extra_volume=200.0)  # 2M of 24M traded in the window: 8 % < 20 %
    row = last(evaluate(bars, CFG, **gates(bars)))
    assert row["side"] == 0 and row["reason"].endswith("share below 20% -> no burst")


def test_no_trade_sizes_means_idle_and_no_gates() -> None:
    bars = quiet_bars()
    bars["whale_buy_volume"] = np.nan
    bars["whale_sell_volume"] = np.nan
    add_burst(bars, -1, +1)  # NaN + 20 stays NaN
    d = evaluate(bars, CFG)  # default gates: never computed (no burst can be measured)
    assert (d["side"] == 0).all() and (d["reason"] == NO_TRADE_SIZES).all()
    assert "no trade sizes" in NO_TRADE_SIZES
    assert state_summary(bars, CFG) == {"last_burst": "no trade sizes (whale volumes unknown): idle"}
    # OHLCV-only bars (no whale columns at all) are the same
    ohlcv = bars[["open", "high", "low", "close", "volume"]]
    assert (evaluate(ohlcv, CFG)["reason"] == NO_TRADE_SIZES).all()


def test_unknown_sizes_in_the_window_or_lookback_refuse_a_burst() -> None:
    bars = quiet_bars()
    add_burst(bars, -1, +1)
    bars.iloc[-100, bars.columns.get_loc("whale_sell_volume")] = np.nan  # inside the lookback
    d = evaluate(bars, CFG, **gates(bars))
    assert d["reason"].iloc[-100] == NO_TRADE_SIZES
    assert last(d)["side"] == 0
    assert last(d)["reason"].endswith("trade sizes unknown for 1 bar(s) of the 3+240 minute window -> no trade")


def test_lookback_needs_half_its_minutes() -> None:
    bars = quiet_bars(100)
    add_burst(bars, -1, +1)
    row = last(evaluate(bars, CFG, **gates(bars)))
    assert row["side"] == 0 and row["reason"].endswith("only 97 of 240 lookback minutes present -> no trade")
    bars = quiet_bars(124)  # 121 lookback bars >= 120
    add_burst(bars, -1, +1)
    assert last(evaluate(bars, CFG, **gates(bars)))["side"] == 1


def test_windows_are_data_time_not_rows() -> None:
    # a big buy 3 minutes before the last bar, the two bars between missing (feed gap): the window
    # (t - 3 min, t] holds the last bar only, so the old buy does not count
    bars = quiet_bars()
    add_burst(bars, -4, +1, btc=30.0)
    add_burst(bars, -1, +1, btc=8.0)
    gap = bars.drop(bars.index[-3:-1])
    st = whale_bursts(gap, CFG)
    assert st["net_notional"].iloc[-1] == 800_000.0
    assert st["net_notional"].iloc[-2] == 3_000_000.0  # the bar with the big buy itself
    # without the gap the last window holds bars -3..-1 and still not the -4 bar
    assert whale_bursts(bars, CFG)["net_notional"].iloc[-1] == 800_000.0


@pytest.mark.parametrize(("k", "fires"), [(17, False), (18, True)])
def test_edge_trigger_in_data_time(k: int, fires: bool) -> None:
    # one burst bar at t0 keeps the 3-minute window in a burst at t0, t0+1, t0+2 (candidates); a second
    # burst at t0+k fires only if no candidate lies in [t0+k-15, t0+k): k >= 18
    bars = quiet_bars(400)
    t0 = 300
    add_burst(bars, t0, +1)
    add_burst(bars, t0 + k, +1)
    d = evaluate(bars, CFG, **gates(bars))
    assert d["side"].iloc[t0] == 1
    assert (d["side"].iloc[t0 + 1:t0 + 3] == 0).all()
    assert d["reason"].iloc[t0 + 1].endswith("already held within the last 15 min (edge-triggered) -> no trade")
    assert bool(d["side"].iloc[t0 + k] == 1) == fires
    assert int((d["side"] != 0).sum()) == 1 + fires
    no_cd = evaluate(bars, dataclasses.replace(CFG, cooldown_minutes=0), **gates(bars))
    assert int((no_cd["side"] != 0).sum()) == 6  # every candidate bar fires


def test_a_blocked_candidate_does_not_arm_the_edge() -> None:
    # the trend blocks the first burst: it is not a candidate, so the second (10 min later) fires
    bars = quiet_bars(400)
    add_burst(bars, 300, +1)
    add_burst(bars, 310, +1)
    g = gates(bars)
    g["trend"].loc[bars.index[295]:bars.index[305], "allow_long"] = False
    d = evaluate(bars, CFG, **g)
    assert (d["side"].iloc[300:303] == 0).all() and d["side"].iloc[310] == 1


def test_precomputed_gate_frames_must_match_the_bars() -> None:
    bars = quiet_bars()
    add_burst(bars, -1, +1)
    g = gates(bars)
    with pytest.raises(ValueError, match="same index"):
        evaluate(bars, CFG, trend=g["trend"].iloc[1:], cvd=g["cvd"])
    with pytest.raises(ValueError, match="lacks column"):
        evaluate(bars, CFG, trend=g["trend"].drop(columns="atr_pct"), cvd=g["cvd"])


def test_empty_and_quiet_input() -> None:
    assert evaluate(quiet_bars().iloc[:0], CFG).empty
    d = evaluate(quiet_bars(), CFG)
    assert (d["side"] == 0).all() and (d["reason"] == "").all()


# -- synthetic long series with the REAL default gates ------------------------------------------------

def whale_series(n: int = 15_500, seed: int = 7, n_bursts: int = 24) -> pd.DataFrame:
    """A SYNTHETIC random walk with taker split, trade counts and small two-sided whale flow, plus one-sided
    whale bursts (with matching taker volume and a small price push) after the default trend warm-up."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.0005, n)
    vol = rng.lognormal(np.log(8), 0.5, n)
    buy_share = np.clip(rng.normal(0.5, 0.08, n), 0.05, 0.95)
    wb = rng.poisson(0.3, n) * rng.uniform(1.0, 3.0, n)
    ws = rng.poisson(0.3, n) * rng.uniform(1.0, 3.0, n)
    starts = np.sort(rng.choice(np.arange(12_500, n - 5), size=n_bursts, replace=False))
    for s in starts:
        side = rng.choice([-1, 1])
        size = rng.uniform(25, 60)
        if side > 0:
            wb[s] += size
        else:
            ws[s] += size
        buy_share[s] = (buy_share[s] * vol[s] + (size if side > 0 else 0.0)) / (vol[s] + size)
        vol[s] += size
        r[s] += side * 0.002
    close = 100_000 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([close[0]], close[:-1]))
    wick = np.abs(rng.normal(0, 0.0002, n))
    idx = pd.date_range("2025-03-01", periods=n, freq="1min", tz="UTC")
    bars = pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) * (1 + wick), "low": np.minimum(open_, close) * (1 - wick),
        "close": close, "volume": vol, "taker_buy_volume": vol * buy_share,
        "taker_sell_volume": vol * (1 - buy_share), "trades": rng.poisson(80, n).astype(float),
        "whale_buy_volume": wb, "whale_sell_volume": ws}, index=idx)
    return bars.drop(bars.index[14_000:14_006])  # a 6-minute feed gap


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return whale_series()


@pytest.fixture(scope="module")
def full(series: pd.DataFrame) -> pd.DataFrame:
    return evaluate(series, CFG)


def test_series_has_signals_and_every_kind_of_reason(series: pd.DataFrame, full: pd.DataFrame) -> None:
    sig = full[full["side"] != 0]
    assert len(sig) >= 5
    assert full["reason"].str.contains("follow LONG").any() and full["reason"].str.contains("follow SHORT").any()
    assert full["reason"].str.contains("edge-triggered").any()
    st = whale_bursts(series, CFG)
    assert (st.loc[sig.index, "burst"].to_numpy() == sig["side"].to_numpy()).all()
    assert (sig["stop"] < sig["entry"]).where(sig["side"] > 0, sig["stop"] > sig["entry"]).all()
    assert (sig["target"] > sig["entry"]).where(sig["side"] > 0, sig["target"] < sig["entry"]).all()
    assert sig["confidence"].between(0.5, 1.0).all()


def test_default_gates_on_segments_equal_full_history_gates(series: pd.DataFrame, full: pd.DataFrame) -> None:
    ts, cv = trend_state(series, TrendConfig()), cvd_state(series, CvdConfig())
    pd.testing.assert_frame_equal(evaluate(series, CFG, trend=ts, cvd=cv), full)
    sig = full[full["side"] != 0]
    longs, shorts = sig[sig["side"] > 0].index, sig[sig["side"] < 0].index
    assert ts.loc[longs, "allow_long"].all() and ts.loc[shorts, "allow_short"].all()
    assert (cv.loc[longs, "cvd"] > 0).all() and (cv.loc[shorts, "cvd"] < 0).all()


def test_no_lookahead(series: pd.DataFrame) -> None:
    assert find_lookahead(evaluate, series, CFG) == []
    cuts = sorted(set(np.linspace(12_400, len(series), 12, dtype=int).tolist()))
    assert find_lookahead(evaluate, series, CFG, cuts=cuts) == []


def test_live_window_equals_backtest(series: pd.DataFrame, full: pd.DataFrame) -> None:
    warm = warmup_minutes_for("whale_follower", {})
    assert warm == CFG.warmup_minutes == GHOSTS["whale_follower"].warmup_minutes
    assert warm >= TrendConfig().warmup_minutes + CFG.cooldown_minutes
    reasons = full["reason"].to_numpy()
    rng = np.random.default_rng(0)
    fired = np.flatnonzero(full["side"].to_numpy() != 0)
    blocked = np.flatnonzero((reasons != "") & (reasons != NO_TRADE_SIZES) & (full["side"].to_numpy() == 0))
    interesting = np.concatenate((fired, rng.choice(blocked, size=min(15, len(blocked)), replace=False)))
    first = int(np.searchsorted(series.index, series.index[0] + pd.Timedelta(minutes=warm - 1)))
    others = rng.choice(np.arange(first, len(series)), size=10, replace=False)
    checked = 0
    for i in sorted(set(interesting[interesting >= first].tolist()) | set(others.tolist())):
        t = series.index[i]
        window = series.loc[t - pd.Timedelta(minutes=warm - 1): t]
        live = evaluate(window, CFG)
        pd.testing.assert_series_equal(live.iloc[-1], full.iloc[i], check_names=False)
        want = None if full["side"].iloc[i] == 0 else Draft.from_row(t, full.iloc[i])
        assert latest_draft("whale_follower", CFG, window) == want
        checked += 1
    assert checked >= 25


def test_inputs_are_not_mutated(series: pd.DataFrame, full: pd.DataFrame) -> None:
    before = series.copy(deep=True)
    res = run_guarded(evaluate, series, CFG)
    assert res.ok and res.drafts.equals(full)
    evaluate(series, CFG)
    state_summary(series, CFG)
    whale_bursts(series, CFG)
    pd.testing.assert_frame_equal(series, before)


def test_state_summary_names_the_last_burst(series: pd.DataFrame, full: pd.DataFrame) -> None:
    s = state_summary(series, CFG)
    st = whale_bursts(series, CFG)
    last_burst = st[st["burst"] != 0].index[-1]
    assert s["last_burst_time"] == last_burst.isoformat()
    assert s["last_burst_side"] == ("buy" if st.loc[last_burst, "burst"] > 0 else "sell")
    assert float(s["last_burst_notional"]) == pytest.approx(st.loc[last_burst, "net_notional"])
    assert s["last_burst"].startswith(f"{last_burst:%Y-%m-%d %H:%M} UTC")
    last_sig = full[full["side"] != 0].index[-1]
    assert s["last_signal"].startswith(f"{last_sig:%Y-%m-%d %H:%M} UTC")
    assert state_summary(quiet_bars(), CFG)["last_burst"] == "none in the last 300 bars"


# -- config -------------------------------------------------------------------------------------------

def test_config_defaults_and_round_trip() -> None:
    c = WhaleFollowerConfig()
    assert (c.print_rule, c.whale_notional, c.median_multiple, c.burst_seconds, c.window_minutes,
            c.lookback_minutes, c.burst_ratio, c.cooldown_minutes) == ("both", 100_000.0, 50.0, 60.0, 3, 240, 5.0, 15)
    assert WhaleFollowerConfig.from_params(c.to_params()) == c
    assert WhaleFollowerConfig.from_params(None) == c
    c2 = WhaleFollowerConfig.from_params({"window_minutes": 5.0, "burst_ratio": Decimal("4"),
                                          "print_rule": "notional"})
    assert c2.window_minutes == 5 and isinstance(c2.window_minutes, int) and c2.burst_ratio == 4.0
    assert c2.warmup_minutes == CFG.warmup_minutes  # the trend filter's 202 h dominate
    assert WhaleFollowerConfig(cooldown_minutes=60).warmup_minutes == CFG.warmup_minutes + 45
    assert CFG.warmup_minutes == CFG.cooldown_minutes + max(TrendConfig().warmup_minutes,
                                                            CvdConfig().warmup_minutes, 243) + 1
    with pytest.raises(AttributeError):
        CFG.burst_ratio = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"print_rule": "largest"}, "print_rule must be one of both, notional, multiple, either, got 'largest'"),
        ({"whale_notional": 0}, "whale_notional must be > 0"),
        ({"median_multiple": 0.5}, "median_multiple must be >= 1"),
        ({"median_window_minutes": 0}, "median_window_minutes must be >= 1 and <= 1440 (minutes), got 0"),
        ({"burst_seconds": 0.5}, "burst_seconds must be >= 1"),
        ({"burst_min_notional": 100_000}, "burst_min_notional (100000) must be above whale_notional (100000)"),
        ({"window_minutes": 0}, "window_minutes must be >= 1"),
        ({"window_minutes": 60}, "lookback_minutes (240) must be at least 5 x window_minutes (60)"),
        ({"burst_ratio": 1.0}, "burst_ratio must be > 1"),
        ({"min_whale_share": 1.5}, "min_whale_share must be >= 0 and <= 1"),
        ({"cooldown_minutes": -1}, "cooldown_minutes must be >= 0"),
        ({"min_stop_pct": 0}, "min_stop_pct must be > 0"),
        ({"target_atr_mult": 0}, "target_atr_mult must be > 0"),
        ({"max_hold_seconds": 10}, "max_hold_seconds must be >= 60"),
        ({"window_minutes": 2.5}, "window_minutes must be a whole number, got 2.5"),
        ({"print_rule": 3}, "print_rule must be text, got 3"),
        ({"burst_ratio": float("inf")}, "burst_ratio must be a finite number"),
        ({"ratio": 3}, "unknown whale_follower parameter(s): ratio; allowed: print_rule"),
    ],
)
def test_config_errors_are_clear(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        WhaleFollowerConfig.from_params(params)
    assert message in str(err.value)


def test_multiple_rule_does_not_need_burst_notional_above_whale_notional() -> None:
    c = WhaleFollowerConfig(print_rule="multiple", whale_notional=1e6, burst_min_notional=5e5)
    assert c.burst_min_notional < c.whale_notional


def test_registry_entry() -> None:
    spec = GHOSTS["whale_follower"]
    assert spec.config_cls is WhaleFollowerConfig and spec.evaluate is evaluate and spec.title
    assert spec.warmup_minutes == WhaleFollowerConfig().warmup_minutes
