"""No look-ahead, ever (DESIGN §4), and live == backtest: checked on synthetic bars with spikes.

`find_lookahead` evaluates a ghost on the series cut at many points and on the full series and requires
identical rows up to each cut. The same helper must catch a deliberately cheating ghost.
"""

import numpy as np
import pandas as pd
import pytest

from apps.engine.guard import find_lookahead, run_guarded
from apps.engine.registry import GHOSTS, latest_draft, warmup_minutes_for
from apps.engine.spike_fader import SpikeFaderConfig, evaluate
from apps.engine.types import Draft
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

CFG = SpikeFaderConfig()


def spiky_bars(n: int = 3000, seed: int = 3, n_spikes: int = 12) -> pd.DataFrame:
    """A random walk (0.05 %/min) with sharp 1.5-2.5 % moves over 3 minutes on 4-6x volume, and a gap."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.0005, n)
    vol = rng.lognormal(np.log(6), 0.8, n)
    for start in rng.choice(np.arange(200, n - 20), size=n_spikes, replace=False):
        r[start:start + 3] += rng.choice([-1, 1]) * rng.uniform(0.015, 0.025) / 3
        vol[start:start + 3] *= rng.uniform(4, 6)
    close = 100_000 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([close[0]], close[:-1]))
    wick = np.abs(rng.normal(0, 0.0002, n))
    idx = pd.date_range("2025-03-01", periods=n, freq="1min", tz="UTC")
    bars = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * (1 + wick),
                         "low": np.minimum(open_, close) * (1 - wick), "close": close, "volume": vol},
                        index=idx)
    return bars.drop(bars.index[1500:1507])  # a 7-minute feed gap


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return spiky_bars()


@pytest.fixture(scope="module")
def full(bars: pd.DataFrame) -> pd.DataFrame:
    return evaluate(bars, CFG)


def test_synthetic_series_has_signals_and_cooldown_blocks(full: pd.DataFrame) -> None:
    assert (full["side"] != 0).sum() >= 5
    assert full["reason"].str.contains("cooldown").any()


def test_spike_fader_has_no_lookahead(bars: pd.DataFrame) -> None:
    cuts = sorted(set(np.linspace(120, len(bars), 20, dtype=int).tolist()))
    assert find_lookahead(evaluate, bars, CFG, cuts=cuts) == []
    assert find_lookahead(evaluate, bars, CFG) == []  # default cuts: even spacing + right after signals


def peeking_fader(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.DataFrame:
    """CHEATS: keeps only the fades that the NEXT bar's close proves right."""
    d = evaluate(bars, cfg)
    nxt = bars["close"].shift(-1)
    wrong = ((d["side"] == -1) & ~(nxt < bars["close"])) | ((d["side"] == 1) & ~(nxt > bars["close"]))
    d.loc[wrong, "side"] = np.int8(0)
    return d


def next_close_direction(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.DataFrame:
    """CHEATS bluntly: goes long before every up-close, short before every down-close."""
    d = evaluate(bars, cfg)
    step = bars["close"].shift(-1) - bars["close"]
    d["side"] = np.sign(step.fillna(0)).astype(np.int8)
    return d


@pytest.mark.parametrize("cheater", [peeking_fader, next_close_direction])
def test_cheating_ghost_is_caught(bars: pd.DataFrame, cheater) -> None:
    violations = find_lookahead(cheater, bars, CFG)
    assert violations, f"{cheater.__name__} uses the next bar and must be caught"
    v = violations[0]
    assert v.column == "side" and v.row == v.cut - 1  # it differs exactly on the last bar it could see


def test_live_window_equals_backtest(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    """latest_draft on the trailing warmup window == evaluate() on the full series at that bar."""
    warm = warmup_minutes_for("spike_fader", {})
    assert warm == GHOSTS["spike_fader"].warmup_minutes
    interesting = np.flatnonzero(full["reason"].to_numpy() != "")
    rng = np.random.default_rng(0)
    others = rng.choice(np.arange(warm, len(bars)), size=20, replace=False)
    checked = 0
    for i in sorted(set(interesting.tolist()) | set(others.tolist())):
        t = bars.index[i]
        window = bars.loc[t - pd.Timedelta(minutes=warm - 1): t]  # warm minutes of data time ending at t
        got = latest_draft("spike_fader", CFG, window)
        want = None if full["side"].iloc[i] == 0 else Draft.from_row(t, full.iloc[i])
        assert got == want, f"live and backtest differ at {t}"
        checked += 1
    assert checked >= 30


def test_latest_draft_is_none_when_idle(bars: pd.DataFrame) -> None:
    assert latest_draft("spike_fader", {}, bars.iloc[:300]) is None
    assert latest_draft("spike_fader", {}, bars.iloc[:0]) is None


def test_guarded_evaluation_matches_and_leaves_input_alone(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    before = bars.copy(deep=True)
    res = run_guarded(evaluate, bars, CFG)
    assert res.ok and res.error is None
    assert res.drafts.equals(full)
    assert bars.equals(before)
