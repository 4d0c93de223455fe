"""Trend filter on synthetic bars: config, directions on constructed trends, gates, warm-up, gaps, causality,
live == backtest, random-walk calibration.

Synthetic paths are random walks simulated at 20 steps per minute, so each 1m bar's high/low is the real
extreme of its path (a realistic true range, which the momentum z is scaled by). sigma 0.0456 % per minute
matches the real 90-day BTC/USDT 1m file.
"""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from apps.engine import trend
from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.registry import GHOSTS, config_from_params, latest_draft, warmup_minutes_for
from apps.engine.trend import (
    DIRECTION_NAMES,
    REGIME_NAMES,
    TREND_COLUMNS,
    TrendConfig,
    evaluate,
    state_summary,
    trend_state,
)
from apps.engine.types import DRAFT_COLUMNS, ConfigError, Draft
from tests.datafiles import _flush_redis, services_use_test_redis, synthetic_bars  # noqa: F401

CFG = TrendConfig()
SIGMA_BTC_1M = 0.000456  # std of 1m log returns, real BTC/USDT 2025-05-20..08-18
# A small config (1h slow SMA of 6 buckets) so gap and edge cases need only hours of bars.
SMALL = TrendConfig(fast_periods=3, slow_periods=6, momentum_periods=2, atr_periods=3, baseline_hours=2)


def walk(n: int, sigma: float = SIGMA_BTC_1M, drift: float | np.ndarray = 0.0, seed: int = 0,
         start: str = "2025-01-01 00:00", sub: int = 20) -> pd.DataFrame:
    """1m bars of a (drifting) random walk simulated at `sub` steps per minute; drift per minute (log)."""
    rng = np.random.default_rng(seed)
    mu = np.broadcast_to(np.asarray(drift, dtype=float), (n,))[:, None] / sub
    steps = rng.normal(0.0, sigma / math.sqrt(sub), (n, sub)) + mu
    path = 100_000.0 * np.exp(np.cumsum(steps.ravel())).reshape(n, sub)
    close = path[:, -1]
    open_ = np.concatenate(([100_000.0], close[:-1]))
    idx = pd.date_range(start, periods=n, freq="1min", tz="UTC", name="open_time")
    return pd.DataFrame({"open": open_, "high": np.maximum(path.max(axis=1), open_),
                         "low": np.minimum(path.min(axis=1), open_), "close": close,
                         "volume": rng.lognormal(1.0, 0.5, n)}, index=idx)


def regime_drift(n: int, seed: int = 1) -> np.ndarray:
    """Alternating up / flat / down legs of 1-3 days (drift per minute), to exercise every state."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n)
    i = 0
    while i < n:
        leg = int(rng.integers(1440, 4320))
        out[i:i + leg] = rng.choice([1e-4, 0.0, -1e-4])
        i += leg
    return out


def check_invariants(st: pd.DataFrame) -> None:
    """Properties that must hold on every row, whatever the data."""
    assert tuple(st.columns) == TREND_COLUMNS
    assert st["direction"].dtype == np.int8 and st["regime"].dtype == np.int8
    assert st["allow_long"].dtype == bool and st["allow_short"].dtype == bool and st["ready"].dtype == bool
    d, r = st["direction"].to_numpy(), st["regime"].to_numpy()
    assert set(np.unique(d)) <= set(DIRECTION_NAMES) and set(np.unique(r)) <= set(REGIME_NAMES)
    # direction and regime never contradict each other (the prototype's NEUTRAL + TRENDING_UP)
    not_vol = r != trend.REGIME_VOLATILE
    assert (r[not_vol] == np.sign(d[not_vol])).all()
    assert st["confidence"].between(0.0, 1.0).all()
    # gates: never long in a down direction, never short in an up direction, nothing while not ready
    assert not (st["allow_long"] & (st["direction"] < 0)).any()
    assert not (st["allow_short"] & (st["direction"] > 0)).any()
    nr = ~st["ready"]
    assert not (st["allow_long"] | st["allow_short"])[nr].any()
    assert (st.loc[nr, ["direction", "regime"]] == 0).all().all() and (st.loc[nr, "confidence"] == 0).all()
    # size 0 exactly where blocked, positive where allowed
    for side in ("long", "short"):
        allowed = st[f"allow_{side}"]
        assert (st.loc[~allowed, f"size_mult_{side}"] == 0).all()
        assert (st.loc[allowed, f"size_mult_{side}"] > 0).all()
        assert (st[f"size_mult_{side}"] <= CFG.strong_size + 1e-12).all()


# ------------------------------------------------------------------------------------------------ config

def test_default_config_is_valid_and_round_trips() -> None:
    assert TrendConfig.KIND == "trend_filter"
    assert TrendConfig.from_params(CFG.to_params()) == CFG
    assert config_from_params("trend_filter", {"weak_z": 1.2}).weak_z == 1.2
    assert GHOSTS["trend_filter"].config_cls is TrendConfig
    assert warmup_minutes_for("trend_filter", {}) == CFG.warmup_minutes


@pytest.mark.parametrize(("params", "message"), [
    ({"fast_periods": 200, "slow_periods": 200}, "fast_periods (200) must be below slow_periods (200)"),
    ({"fast_periods": 60, "slow_periods": 50}, "fast_periods (60) must be below slow_periods (50)"),
    ({"weak_z": 2.0, "strong_z": 1.5}, "strong_z (1.5) must be >= weak_z (2)"),
    ({"weak_score": 0.7, "strong_score": 0.5}, "strong_score (0.5) must be >= weak_score (0.7)"),
    ({"volatile_ratio": 3.0, "extreme_ratio": 3.0}, "extreme_ratio (3) must be above volatile_ratio (3)"),
    ({"volatile_atr_pct": 0.5, "extreme_atr_pct": 0.4}, "extreme_atr_pct (0.4 %) must be above volatile_atr_pct"),
    ({"weight_5m": 0, "weight_15m": 0, "weight_1h": 0}, "must be > 0"),
    ({"weak_size": 2.0}, "neutral_size (1) <= weak_size (2) <= strong_size (1.5)"),
    ({"weight_1h": -0.1}, "trend_filter.weight_1h must be >= 0"),
    ({"min_coverage": 0}, "trend_filter.min_coverage must be > 0"),
    ({"slow_periods": 1}, "trend_filter.slow_periods must be >= 2"),
    ({"weak_z": 0}, "trend_filter.weak_z must be > 0"),
    ({"max_hold_seconds": 10}, "trend_filter.max_hold_seconds must be >= 60"),
    ({"slow_periods": 12.5}, "must be a whole number"),
    ({"fast_periods": True}, "must be an integer"),
    ({"weak_z": "1"}, "must be a number"),
    ({"weak_z": float("nan")}, "finite"),
    ({"slow_period": 200}, "unknown trend_filter parameter(s): slow_period"),
])
def test_inconsistent_params_are_refused_with_a_clear_message(params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        TrendConfig.from_params(params)
    assert message in str(exc.value)


def test_warmup_follows_the_longest_lookback() -> None:
    # the 1h slow SMA dominates: more slow buckets -> 60 more minutes each
    assert TrendConfig(slow_periods=201).warmup_minutes == CFG.warmup_minutes + 60
    assert CFG.warmup_minutes >= CFG.slow_periods * 60  # 200 one-hour buckets at least
    # a small config is then dominated by the 24h volatility baseline
    assert TrendConfig(fast_periods=2, slow_periods=3).warmup_minutes >= 24 * 60


# ------------------------------------------------------------------------------------------------ behaviour

@pytest.fixture(scope="module")
def up() -> pd.DataFrame:
    return walk(CFG.warmup_minutes + 3000, drift=1e-4, seed=11)  # +14 %/day: an unmistakable up-trend


@pytest.fixture(scope="module")
def down() -> pd.DataFrame:
    return walk(CFG.warmup_minutes + 3000, drift=-1e-4, seed=12)


def test_up_trend_is_strong_up_and_blocks_shorts(up: pd.DataFrame) -> None:
    st = trend_state(up, CFG)
    check_invariants(st)
    tail = st.iloc[-2000:]
    assert tail["ready"].all()
    assert (tail["direction"] > 0).mean() >= 0.9
    assert (tail["direction"] == 2).mean() >= 0.5
    assert not tail["allow_short"].any() or (tail.loc[tail["allow_short"], "direction"] == 0).all()
    assert (tail["regime"] == trend.REGIME_UP).mean() >= 0.85
    strong = tail[tail["direction"] == 2]
    assert (strong["size_mult_long"] > 1.0).all() and (strong["size_mult_short"] == 0).all()


def test_down_trend_is_strong_down_and_blocks_longs(down: pd.DataFrame) -> None:
    st = trend_state(down, CFG)
    check_invariants(st)
    tail = st.iloc[-2000:]
    assert (tail["direction"] < 0).mean() >= 0.9
    assert (tail["direction"] == -2).mean() >= 0.5
    assert (tail["regime"] == trend.REGIME_DOWN).mean() >= 0.85
    assert not tail.loc[tail["direction"] < 0, "allow_long"].any()


def test_flat_market_is_neutral_range_and_allows_both() -> None:
    bars = synthetic_bars([100.0] * (CFG.warmup_minutes + 300))
    st = trend_state(bars, CFG)
    check_invariants(st)
    tail = st.iloc[-200:]
    assert tail["ready"].all()
    assert (tail["direction"] == 0).all() and (tail["regime"] == trend.REGIME_RANGE).all()
    assert tail["allow_long"].all() and tail["allow_short"].all()
    # no momentum at all and volatility exactly at its baseline: fully confident it is trendless
    assert (tail["confidence"] == 1.0).all()
    assert (tail["size_mult_long"] == CFG.neutral_size).all()


def test_warm_up_blocks_both_sides() -> None:
    """The prototype allowed both sides during warm-up; here nothing is allowed until all inputs are known."""
    # the slow 1h SMA needs 200 COMPLETE hours: the input starts on the hour, so the first ready bar is the
    # last minute of hour 200; one minute short, nothing is ready, whatever the trend
    bars = walk(CFG.slow_periods * 60 + 30, drift=1e-4, seed=3)
    full = trend_state(bars, CFG)
    assert int(np.argmax(full["ready"].to_numpy())) == CFG.slow_periods * 60 - 1
    bars = bars.iloc[:CFG.slow_periods * 60 - 1]
    st = trend_state(bars, CFG)
    check_invariants(st)
    assert not st["ready"].any()
    assert not (st["allow_long"] | st["allow_short"]).any()
    assert (st["size_mult_long"] == 0).all() and (st["size_mult_short"] == 0).all()
    assert evaluate(bars, CFG)["side"].eq(0).all()
    assert state_summary(bars, CFG)["status"].startswith("warming up")


def test_extreme_volatility_blocks_everything() -> None:
    n = CFG.warmup_minutes + 120
    bars = synthetic_bars([100.0] * n, wick=0.0002)
    # the last 20 minutes swing 1.2 % each way inside every bar: 1m ATR ~2.4 %, far above 0.5 %
    bars.iloc[-20:, bars.columns.get_loc("high")] = 101.2
    bars.iloc[-20:, bars.columns.get_loc("low")] = 98.8
    st = trend_state(bars, CFG)
    check_invariants(st)
    last = st.iloc[-1]
    assert bool(last["ready"])
    assert last["atr_pct"] > CFG.extreme_atr_pct
    assert last["regime"] == trend.REGIME_VOLATILE
    assert not last["allow_long"] and not last["allow_short"] and last["confidence"] == 0.0
    before = st.iloc[-21]
    assert before["allow_long"] and before["allow_short"] and before["regime"] == trend.REGIME_RANGE


def test_moderately_volatile_regime_halves_the_size() -> None:
    n = CFG.warmup_minutes + 50  # the wide bars sit in the still-incomplete hour: not yet in the baseline
    bars = synthetic_bars([100.0] * n, wick=0.0002)
    # ranges 3x the day's (0.12 % vs 0.04 %): VOLATILE (>= 2.5x) but not extreme (< 5x, < 0.25 %)
    bars.iloc[-CFG.atr_minutes:, bars.columns.get_loc("high")] = 100.06
    bars.iloc[-CFG.atr_minutes:, bars.columns.get_loc("low")] = 99.94
    last = trend_state(bars, CFG).iloc[-1]
    assert last["regime"] == trend.REGIME_VOLATILE and last["direction"] == 0
    assert last["allow_long"] and last["allow_short"]
    calm = (CFG.extreme_ratio - 3.0) / (CFG.extreme_ratio - 1.0)  # ratio 0.12 / 0.04 = 3
    assert last["confidence"] == pytest.approx(calm, rel=1e-6)
    assert last["size_mult_long"] == pytest.approx(CFG.neutral_size * (0.5 + 0.5 * calm) * 0.5, rel=1e-6)


def test_direction_changes_only_when_a_5m_bucket_completes(up: pd.DataFrame) -> None:
    bars = walk(CFG.warmup_minutes + 6000, drift=regime_drift(CFG.warmup_minutes + 6000), seed=5)
    st = trend_state(bars, CFG)
    d = st["direction"].to_numpy()
    changed = np.flatnonzero(d[1:] != d[:-1]) + 1
    assert len(changed) > 5
    minute = (bars.index[changed].as_unit("s").asi8 // 60)
    assert ((minute + 1) % 5 == 0).all()  # the row that completes a 5m bucket is its last minute


def test_buckets_match_an_independent_pandas_resample() -> None:
    """Bucket OHLC (with a gap inside a bucket and a whole missing bucket) and SMAs, against pandas."""
    bars = walk(3000, seed=8, start="2025-01-01 00:07")  # starts inside a 15m and a 1h bucket
    bars = bars.drop(bars.index[1000:1004]).drop(bars.index[2000:2090])
    st = trend._compute(trend.validate_bars(bars), SMALL)
    for b in trend.TIMEFRAMES:
        tf = st.tfs[b]
        agg = bars.resample(f"{b}min", label="left", closed="left").agg(
            {"high": "max", "low": "min", "close": "last"})
        grid = pd.date_range(pd.Timestamp(tf.base * b * 60, unit="s", tz="UTC"), periods=len(tf.close),
                             freq=f"{b}min")
        agg = agg.reindex(grid)
        agg.iloc[0] = np.nan  # the bucket the input starts inside is unknown, not partial
        np.testing.assert_array_equal(tf.close, agg["close"].to_numpy())
        sma = agg["close"].rolling(SMALL.fast_periods, min_periods=math.ceil(0.8 * SMALL.fast_periods)).mean()
        sma[:SMALL.fast_periods] = np.nan  # windows reaching into the unknown first bucket
        np.testing.assert_allclose(tf.fast, sma.to_numpy(), rtol=1e-12, equal_nan=True)


def test_a_missing_bucket_blocks_both_sides_until_complete_again() -> None:
    """Documented gap rule: an EMPTY 5m bucket makes the 5m timeframe unknown (not ready) while it is the
    latest completed bucket and again when it is the momentum reference; a bucket with some minutes
    missing keeps its OHLC and changes nothing."""
    cfg = dataclasses.replace(SMALL, min_coverage=0.6)  # one empty bucket leaves the 3-bucket windows usable
    n = cfg.warmup_minutes + 600
    bars = walk(n, seed=4)
    t0 = bars.index[cfg.warmup_minutes + 100].floor("5min")
    full_gap = bars.drop(bars.index[(bars.index >= t0) & (bars.index < t0 + pd.Timedelta(minutes=5))])
    st = trend_state(full_gap, cfg)
    check_invariants(st)
    after = st.loc[t0 + pd.Timedelta(minutes=5): t0 + pd.Timedelta(minutes=8)]  # until the next 5m completes
    assert not after["ready"].any() and not (after["allow_long"] | after["allow_short"]).any()
    # bucket [s, s+5) is the latest completed one for rows s+4 .. s+8; the bucket starting at ref_time has
    # the empty bucket as its momentum reference
    ref_time = t0 + pd.Timedelta(minutes=5 * cfg.momentum_periods)
    m = pd.Timedelta(minutes=1)
    assert not st.loc[ref_time + 4 * m: ref_time + 8 * m, "ready"].any()
    assert st.loc[t0 + 9 * m: ref_time + 3 * m, "ready"].all()
    assert st.loc[ref_time + 9 * m: ref_time + 60 * m, "ready"].all()
    # only 3 of the 5 minutes missing: the bucket has OHLC from the 2 it has, the filter stays ready
    partial = bars.drop(bars.index[(bars.index >= t0) & (bars.index < t0 + pd.Timedelta(minutes=3))])
    sp = trend_state(partial, cfg)
    assert sp.loc[t0 + pd.Timedelta(minutes=4): t0 + pd.Timedelta(minutes=60), "ready"].all()


# ------------------------------------------------------------------------------------------------ causality

@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    """Up/flat/down legs with two feed gaps (7 min and 75 min): every state, and gaps, in 6 days."""
    n = CFG.warmup_minutes + 9000
    bars = walk(n, drift=regime_drift(n, seed=2), seed=9)
    return bars.drop(bars.index[15000:15007]).drop(bars.index[18000:18075])


def test_trend_state_has_no_lookahead(mixed: pd.DataFrame) -> None:
    cuts = sorted(set(np.linspace(CFG.warmup_minutes - 100, len(mixed), 25, dtype=int).tolist()))
    assert find_lookahead(trend_state, mixed, CFG, cuts=cuts) == []
    small = mixed.iloc[-3000:]
    assert find_lookahead(trend_state, small, SMALL, cuts=list(range(600, 3000, 97))) == []


def test_evaluate_has_no_lookahead(mixed: pd.DataFrame) -> None:
    d = evaluate(mixed, CFG)
    assert (d["side"] != 0).sum() >= 2  # the legs produce strong edges
    assert find_lookahead(evaluate, mixed, CFG) == []  # even spacing + right after every signal


def test_cheating_trend_is_caught(mixed: pd.DataFrame) -> None:
    def peeking(bars: pd.DataFrame, cfg: TrendConfig) -> pd.DataFrame:
        st = trend_state(bars, cfg)
        st["direction"] = st["direction"].shift(-5, fill_value=0).astype(np.int8)  # 5 minutes ahead
        return st
    assert find_lookahead(peeking, mixed, CFG)


def test_live_window_equals_full_history(mixed: pd.DataFrame) -> None:
    """trend_state and evaluate on the trailing warmup_minutes window == the full run, at many bars."""
    full = trend_state(mixed, CFG)
    drafts = evaluate(mixed, CFG)
    warm = CFG.warmup_minutes
    start = mixed.index[0] + pd.Timedelta(minutes=warm)
    eligible = np.flatnonzero(mixed.index >= start)
    rng = np.random.default_rng(0)
    rows = set(rng.choice(eligible, size=40, replace=False).tolist())
    rows |= set(np.flatnonzero(drafts["reason"].to_numpy() != "").tolist())  # every edge
    d = full["direction"].to_numpy()
    rows |= set((np.flatnonzero(d[1:] != d[:-1]) + 1)[:30].tolist())  # direction changes
    gap_after = np.flatnonzero(np.diff(mixed.index.as_unit("s").asi8) > 60) + 1
    rows |= {int(g) for g in gap_after} | {int(g) + 1 for g in gap_after}
    rows = sorted(r for r in rows if r in set(eligible.tolist()))
    assert len(rows) >= 60
    for i in rows:
        t = mixed.index[i]
        window = mixed.loc[t - pd.Timedelta(minutes=warm - 1): t]
        live = trend_state(window, CFG).iloc[-1]
        pd.testing.assert_series_equal(live, full.iloc[i], check_exact=True, obj=f"trend_state at {t}")
        got = latest_draft("trend_filter", CFG, window)
        want = None if drafts["side"].iloc[i] == 0 else Draft.from_row(t, drafts.iloc[i])
        assert got == want, f"live and backtest drafts differ at {t}"
        assert evaluate(window, CFG)["reason"].iloc[-1] == drafts["reason"].iloc[i]
    # equality is meant on live rows: all but the few right after the 75-minute gap (empty buckets) are ready
    assert full["ready"].iloc[rows].mean() >= 0.9


def test_inputs_are_not_mutated(mixed: pd.DataFrame) -> None:
    before = mixed.copy(deep=True)
    trend_state(mixed, CFG)
    state_summary(mixed, CFG)
    res = run_guarded(evaluate, mixed, CFG)
    assert res.ok, res.error
    assert res.drafts.equals(evaluate(mixed, CFG))
    assert mixed.equals(before)


# ------------------------------------------------------------------------------------------------ ghost

def test_ghost_enters_on_the_strong_edge_with_atr_levels(mixed: pd.DataFrame) -> None:
    d = evaluate(mixed, CFG)
    assert tuple(d.columns) == DRAFT_COLUMNS and d.index.equals(mixed.index)
    st = trend_state(mixed, CFG)
    sig = d[d["side"] != 0]
    assert len(sig) >= 2
    for t, row in sig.iterrows():
        s = int(row["side"])
        i = mixed.index.get_loc(t)
        assert st["direction"].iloc[i] == 2 * s and st["regime"].iloc[i] == s  # strong and aligned
        assert st["direction"].iloc[i - 1] != 2 * s or mixed.index[i - 1] < t.floor("5min") - pd.Timedelta(
            minutes=1)  # an edge: the previous 5m step was not strong that way
        assert row["entry"] == mixed["close"].iloc[i]
        assert s * (row["target"] - row["entry"]) > 0 and s * (row["entry"] - row["stop"]) > 0
        assert abs(row["stop"] / row["entry"] - 1) >= CFG.min_stop_pct / 100 - 1e-12
        assert row["size_mult"] == (st["size_mult_long"] if s > 0 else st["size_mult_short"]).iloc[i]
        assert row["confidence"] == st["confidence"].iloc[i]
        assert row["max_hold_s"] == CFG.max_hold_seconds and row["priority"] == CFG.priority
        assert row["reason"].startswith("trend turned STRONG") and ("LONG" if s > 0 else "SHORT") in row["reason"]
    # edge-triggered: within one unbroken run of strong direction there is at most one signal
    run_id = np.cumsum(np.r_[True, st["direction"].to_numpy()[1:] != st["direction"].to_numpy()[:-1]])
    per_run = pd.Series(run_id[d["side"].to_numpy() != 0]).value_counts()
    assert (per_run == 1).all()


def test_state_summary_names_the_state(mixed: pd.DataFrame) -> None:
    s = state_summary(mixed, CFG)
    last = trend_state(mixed, CFG).iloc[-1]
    assert s["direction"] == DIRECTION_NAMES[int(last["direction"])]
    assert s["regime"] == REGIME_NAMES[int(last["regime"])]
    assert s["confidence"] == f"{last['confidence']:.2f}"
    assert all(isinstance(v, str) for v in s.values())
    assert state_summary(mixed.iloc[:0], CFG) == {"status": "no bars yet"}


def test_empty_input() -> None:
    empty = walk(10).iloc[:0]
    st = trend_state(empty, CFG)
    assert len(st) == 0 and tuple(st.columns) == TREND_COLUMNS
    assert len(evaluate(empty, CFG)) == 0


# ------------------------------------------------------------------------------------------------ calibration

@pytest.mark.parametrize("seed", [21, 22, 23])
def test_driftless_random_walk_is_mostly_neutral(seed: int) -> None:
    """Calibration: a driftless walk with real BTC 1m volatility is NEUTRAL >= 70 % of the ready time.

    The prototype's fixed 0.3 %/60 min labelled 52 % of such a walk as trending. Measured here with the
    defaults: ~83-87 % neutral, < 2 % strong. Loosen weak_z or weak_score and this fails.
    """
    bars = walk(CFG.warmup_minutes + 50_000, seed=seed)
    st = trend_state(bars, CFG)
    r = st[st["ready"]]
    assert len(r) >= 45_000
    shares = r["direction"].value_counts(normalize=True)
    print(f"\nrandom walk seed {seed}: " + ", ".join(f"{DIRECTION_NAMES[k]} {shares.get(k, 0):.1%}"
                                                   for k in (2, 1, 0, -1, -2)))
    assert shares.get(0, 0.0) >= 0.70
    assert shares.get(2, 0.0) + shares.get(-2, 0.0) <= 0.03
    # no volatility clustering in a random walk: the regime is almost never volatile, never extreme
    assert (r["regime"] == trend.REGIME_VOLATILE).mean() <= 0.01
    assert (r["allow_long"] | r["allow_short"]).all()


def test_calibration_test_can_fail() -> None:
    """The same walk with the prototype-like sensitivity (a single weak vote suffices, low z) is NOT mostly
    neutral, so the calibration test above is a real check."""
    loose = TrendConfig(weak_z=0.3, strong_z=0.6, weak_score=0.1, strong_score=0.3)
    bars = walk(CFG.warmup_minutes + 20_000, seed=21)
    r = trend_state(bars, loose)
    assert (r.loc[r["ready"], "direction"] == 0).mean() < 0.70
