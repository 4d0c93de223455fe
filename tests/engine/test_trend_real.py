"""The trend filter on the real 90-day Binance BTC/USDT 1m file (freqtrade download, filimonov).

Reports (pytest -s) the share of time in each direction and regime, the gate's blocking shares and the
ghost's signals; checks the resampled buckets, the SMAs and the 1m ATR against independent pandas
computations, and no look-ahead / live == backtest on real data.
"""

import numpy as np
import pandas as pd
import pytest

from apps.engine import trend
from apps.engine.guard import find_lookahead
from apps.engine.registry import latest_draft
from apps.engine.trend import DIRECTION_NAMES, REGIME_NAMES, TrendConfig, evaluate, state_summary, trend_state
from apps.engine.types import Draft
from tests.datafiles import BTC_90D, _flush_redis, load_freqtrade_1m, services_use_test_redis  # noqa: F401
from tests.engine.test_trend import check_invariants

CFG = TrendConfig()


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return load_freqtrade_1m(BTC_90D)


@pytest.fixture(scope="module")
def state(btc: pd.DataFrame) -> pd.DataFrame:
    return trend_state(btc, CFG)


@pytest.fixture(scope="module")
def drafts(btc: pd.DataFrame) -> pd.DataFrame:
    return evaluate(btc, CFG)


def test_shares_of_time_in_each_state(btc: pd.DataFrame, state: pd.DataFrame) -> None:
    check_invariants(state)
    ready = state[state["ready"]]
    d = ready["direction"].value_counts(normalize=True)
    r = ready["regime"].value_counts(normalize=True)
    both = (~ready["allow_long"] & ~ready["allow_short"]).mean()
    print(f"\nBTC/USDT 1m {btc.index[0]:%Y-%m-%d}..{btc.index[-1]:%Y-%m-%d} ({len(btc)} bars), ready "
          f"{state['ready'].mean():.1%} (warm-up {CFG.warmup_minutes} min)")
    print("  direction: " + ", ".join(f"{DIRECTION_NAMES[k]} {d.get(k, 0):.2%}" for k in (2, 1, 0, -1, -2)))
    print("  regime:    " + ", ".join(f"{REGIME_NAMES[k]} {r.get(k, 0):.2%}" for k in (1, 0, -1, 2)))
    print(f"  longs blocked {1 - ready['allow_long'].mean():.2%}, shorts blocked "
          f"{1 - ready['allow_short'].mean():.2%}, both blocked (extreme volatility) {both:.2%}; "
          f"confidence median {ready['confidence'].median():.2f}; 1m ATR median {ready['atr_pct'].median():.3f}%")
    # the warm-up is the first 200 complete hours (8.3 days) of 90.8: everything after it is known
    assert state["ready"].iloc[CFG.slow_periods * 60:].all()
    assert not state["ready"].iloc[:CFG.slow_periods * 60 - 1].any()
    assert set(d.index) == set(DIRECTION_NAMES) and set(r.index) == set(REGIME_NAMES)  # every state occurs
    # mostly neutral, like the random walk BTC nearly is at these horizons, but not a filter that never acts
    assert 0.60 <= d[0] <= 0.95
    assert 0.0 < both <= 0.02  # "everything blocked" is rare: the extreme tail of volatility only


def test_resampled_buckets_and_smas_match_pandas(btc: pd.DataFrame) -> None:
    """Independent: pandas resample (UTC-aligned, left-closed) + rolling mean on the 1h and 5m closes."""
    st = trend._compute(trend.validate_bars(btc), CFG)
    for b in (5, 60):
        tf = st.tfs[b]
        agg = btc["close"].resample(f"{b}min", label="left", closed="left").last()
        np.testing.assert_array_equal(tf.close, agg.to_numpy())  # the file starts at 00:00 and has no gaps
        np.testing.assert_allclose(tf.slow, agg.rolling(CFG.slow_periods).mean().to_numpy(), rtol=1e-11,
                                   equal_nan=True)
        np.testing.assert_allclose(tf.roc, (agg / agg.shift(CFG.momentum_periods) - 1).to_numpy(), rtol=1e-12,
                                   equal_nan=True)


def test_atr_pct_matches_pandas(btc: pd.DataFrame, state: pd.DataFrame) -> None:
    prev = btc["close"].shift(1)
    tr = np.maximum(btc["high"], prev) - np.minimum(btc["low"], prev)
    atr = tr.rolling(CFG.atr_minutes).mean() / btc["close"] * 100
    np.testing.assert_allclose(state["atr_pct"].to_numpy(), atr.to_numpy(), rtol=1e-9, equal_nan=True)
    assert state["atr_pct"].isna().sum() == CFG.atr_minutes  # the first bar's true range is unknown


def test_ghost_signals_on_real_data(btc: pd.DataFrame, state: pd.DataFrame, drafts: pd.DataFrame) -> None:
    sig = drafts[drafts["side"] != 0]
    edges = drafts[drafts["reason"] != ""]
    print(f"\ntrend ghost: {len(edges)} strong edges, {len(sig)} signals ({int((sig['side'] > 0).sum())} long, "
          f"{int((sig['side'] < 0).sum())} short), {len(edges) - len(sig)} refused (volatile / extreme)")
    for t, row in sig.iloc[[0, len(sig) // 2, -1]].iterrows():
        print(f"  {t:%Y-%m-%d %H:%M} {row['reason']}")
    assert len(sig) >= 5
    assert (state.loc[sig.index, "direction"].to_numpy() == 2 * sig["side"].to_numpy()).all()
    longs, shorts = sig[sig["side"] > 0], sig[sig["side"] < 0]
    assert (longs["stop"] < longs["entry"]).all() and (longs["target"] > longs["entry"]).all()
    assert (shorts["stop"] > shorts["entry"]).all() and (shorts["target"] < shorts["entry"]).all()
    assert (sig["entry"] == btc.loc[sig.index, "close"]).all()
    assert sig["confidence"].between(0, 1).all() and (sig["size_mult"] > 0).all()


def test_no_lookahead_and_live_equals_backtest_on_real_data(btc: pd.DataFrame, state: pd.DataFrame,
                                                            drafts: pd.DataFrame) -> None:
    part = btc.iloc[:40_000]
    cuts = sorted(set(np.linspace(11_000, len(part), 12, dtype=int).tolist()))
    assert find_lookahead(trend_state, part, CFG, cuts=cuts) == []
    assert find_lookahead(evaluate, btc, CFG, n_cuts=12) == []
    warm = CFG.warmup_minutes
    rng = np.random.default_rng(1)
    rows = set(rng.choice(np.arange(warm, len(btc)), size=15, replace=False).tolist())
    rows |= set(np.flatnonzero(drafts["reason"].to_numpy() != "")[:15].tolist())
    for i in sorted(rows):
        t = btc.index[i]
        window = btc.iloc[i - warm + 1: i + 1]
        pd.testing.assert_series_equal(trend_state(window, CFG).iloc[-1], state.iloc[i], check_exact=True)
        want = None if drafts["side"].iloc[i] == 0 else Draft.from_row(t, drafts.iloc[i])
        assert latest_draft("trend_filter", CFG, window) == want


def test_state_summary_on_real_data(btc: pd.DataFrame) -> None:
    s = state_summary(btc.iloc[-CFG.warmup_minutes:], CFG)
    print(f"\nstate at {s['as_of']}: {s}")
    assert s["direction"] in DIRECTION_NAMES.values() and s["regime"] in REGIME_NAMES.values()
