"""The spike fader on the real 90-day Binance BTC/USDT 1m file (freqtrade download, filimonov).

Key check: the bars where |spike_moves| >= 1.2 % are exactly those an INDEPENDENT pandas computation
finds (shift by 15 minutes of time, then align on the index). Plus: no look-ahead, live == backtest,
cooldown respected, levels on the right side of entry, input untouched.
"""

import numpy as np
import pandas as pd
import pytest

from apps.engine.exits import simulate_trade
from apps.engine.fills import fill_model_for
from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.registry import latest_draft, warmup_minutes_for
from apps.engine.spike_fader import SpikeFaderConfig, evaluate, spike_moves
from apps.engine.types import Draft
from tests.datafiles import BTC_90D, _flush_redis, load_freqtrade_1m, services_use_test_redis  # noqa: F401

CFG = SpikeFaderConfig()


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return load_freqtrade_1m(BTC_90D)


@pytest.fixture(scope="module")
def drafts(btc: pd.DataFrame) -> pd.DataFrame:
    return evaluate(btc, CFG)


def test_file_is_the_90_day_series(btc: pd.DataFrame) -> None:
    # 90 full days are 129,600 minutes; the file runs on to 2025-08-18 18:27 (130,708 rows, no gaps).
    assert len(btc) >= 129_600
    assert btc.index[0] == pd.Timestamp("2025-05-20 00:00", tz="UTC")
    assert (btc.index[-1] - btc.index[0]) >= pd.Timedelta(days=90)
    assert list(btc.columns) == ["open", "high", "low", "close", "volume"]


def test_spike_bars_match_an_independent_computation(btc: pd.DataFrame, drafts: pd.DataFrame) -> None:
    moves = spike_moves(btc, CFG)
    # independent: shift the close series forward by 15 minutes of TIME, align on the bar index
    ref = btc["close"].shift(freq="15min").reindex(btc.index)
    independent = btc["close"] / ref - 1
    mine = set(moves.index[moves.abs() >= 0.012])
    theirs = set(independent.index[independent.abs() >= 0.012])
    assert mine == theirs
    np.testing.assert_allclose(moves.to_numpy(), independent.to_numpy(), rtol=1e-12, equal_nan=True)
    assert moves.isna().sum() == 15  # only the first 15 minutes lack a reference (the file has no gaps)

    sig = drafts[drafts["side"] != 0]
    n_up = int((moves >= 0.012).sum())
    n_down = int((moves <= -0.012).sum())
    print(f"\nBTC/USDT 1m {btc.index[0]:%Y-%m-%d}..{btc.index[-1]:%Y-%m-%d} ({len(btc)} bars): "
          f"{len(mine)} spike bars (|move| >= 1.2 % in 15 min; {n_up} up, {n_down} down), "
          f"{len(sig)} signals ({int((sig['side'] < 0).sum())} short, {int((sig['side'] > 0).sum())} long)")
    assert len(mine) > 0 and len(sig) > 0
    assert set(sig.index) <= mine  # every signal is a spike bar
    assert all(drafts.loc[t, "reason"] for t in mine)  # every spike bar says what happened to it


def test_signals_respect_cooldown_and_levels(drafts: pd.DataFrame, btc: pd.DataFrame) -> None:
    sig = drafts[drafts["side"] != 0]
    gaps_s = np.diff(sig.index.as_unit("s").asi8)
    assert (gaps_s >= CFG.cooldown_seconds).all()
    longs, shorts = sig[sig["side"] == 1], sig[sig["side"] == -1]
    assert (longs["target"] > longs["entry"]).all() and (longs["stop"] < longs["entry"]).all()
    assert (shorts["target"] < shorts["entry"]).all() and (shorts["stop"] > shorts["entry"]).all()
    dist_stop = (sig["stop"] / sig["entry"] - 1).abs()
    dist_target = (sig["target"] / sig["entry"] - 1).abs()
    assert (dist_stop >= CFG.min_stop_pct / 100 - 1e-12).all()
    assert (dist_target >= CFG.min_target_pct / 100 - 1e-12).all()
    assert (dist_target <= CFG.take_profit_pct / 100 + 1e-12).all()
    assert sig["confidence"].between(0.5, 1.0).all()
    assert (sig["entry"] == btc.loc[sig.index, "close"]).all()
    # the fade direction: up-spike -> short, down-spike -> long
    moves = spike_moves(btc, CFG).loc[sig.index]
    assert (np.sign(moves) == -sig["side"]).all()


def test_trades_from_real_signals_follow_the_fill_rules(drafts: pd.DataFrame, btc: pd.DataFrame) -> None:
    fm = fill_model_for("binance")
    sig_pos = np.flatnonzero(drafts["side"].to_numpy() != 0)
    outcomes = []
    for i in sig_pos:
        d = drafts.iloc[i]
        o = simulate_trade(btc, int(i), int(d["side"]), d["entry"], d["stop"], d["target"],
                           d["max_hold_s"], fm)
        assert o is not None and o.entry_time == btc.index[i + 1]
        assert o.entry_price == pytest.approx(btc["open"].iloc[i + 1] * (1 + o.side * 0.0005))
        assert o.reason in {"stop", "target", "time", "end_of_data"}
        assert o.exit_time - o.entry_time <= pd.Timedelta(seconds=CFG.max_hold_seconds)
        outcomes.append(o)
    wins = sum(o.net_pnl > 0 for o in outcomes)
    net_pct = sum(o.net_pnl / o.entry_price for o in outcomes) * 100
    reasons = pd.Series([o.reason for o in outcomes]).value_counts().to_dict()
    print(f"\n{len(outcomes)} fades, 1 unit each, binance spot fees + 5 bps: {wins} net winners, "
          f"sum of net returns {net_pct:+.2f} %, exits {reasons}")


def test_no_lookahead_on_real_data(btc: pd.DataFrame, drafts: pd.DataFrame) -> None:
    sig_pos = np.flatnonzero(drafts["side"].to_numpy() != 0)
    blocked = np.flatnonzero(drafts["reason"].str.contains("cooldown").to_numpy())
    cuts = {int(p) + 1 for p in sig_pos[:8]} | {int(p) + 1 for p in blocked[:4]}
    cuts |= set(np.linspace(1000, len(btc), 6, dtype=int).tolist())
    assert find_lookahead(evaluate, btc, CFG, cuts=sorted(cuts)) == []


def test_live_window_equals_backtest_on_real_data(btc: pd.DataFrame, drafts: pd.DataFrame) -> None:
    warm = warmup_minutes_for("spike_fader", CFG)
    interesting = np.flatnonzero(drafts["reason"].to_numpy() != "")
    others = np.random.default_rng(1).choice(np.arange(warm, len(btc)), size=30, replace=False)
    for i in sorted(set(interesting.tolist()) | set(others.tolist())):
        window = btc.iloc[max(0, i - warm + 1): i + 1]
        want = None if drafts["side"].iloc[i] == 0 else Draft.from_row(btc.index[i], drafts.iloc[i])
        assert latest_draft("spike_fader", CFG.to_params(), window) == want, btc.index[i]


def test_guarded_run_on_real_data_leaves_input_alone(btc: pd.DataFrame, drafts: pd.DataFrame) -> None:
    before = btc.copy(deep=True)
    res = run_guarded(evaluate, btc, CFG)
    assert res.ok
    assert res.drafts.equals(drafts)
    assert btc.equals(before)
