"""evaluate_all gives every ghost's own evaluate() output exactly, validates once, and stays guarded.

Also the validate_bars fast path: it is taken only for untouched frames validate_bars itself returned;
a frame edited after validation (in place, through copy-on-write) or any foreign frame is checked in full.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from apps.engine import bars as bars_mod
from apps.engine.bars import is_validated, validate_bars
from apps.engine.batch import evaluate_all
from apps.engine.registry import GHOSTS, _config
from apps.engine.types import BarsError
from tests.datafiles import (  # noqa: F401
    _flush_redis,
    load_freqtrade_1m,
    services_use_test_redis,
    synthetic_bars,
)


def _with_synthetic_inputs(bars: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    """Adds SYNTHETIC taker split, trade counts, whale and liquidation volumes (test inputs, not market data)
    so that every ghost's busy path runs: divergences, bursts and cascades."""
    rng = np.random.default_rng(seed)
    b = bars.copy()
    v = b["volume"].to_numpy()
    n = len(b)
    b["taker_buy_volume"] = v * rng.uniform(0.2, 0.8, n)
    b["trades"] = np.rint(v * 50)
    b["whale_buy_volume"] = np.where(rng.random(n) < 0.05, v * rng.uniform(0, 0.9, n), 0.0)
    b["whale_sell_volume"] = np.where(rng.random(n) < 0.05, v * rng.uniform(0, 0.9, n), 0.0)
    b["liq_long_volume"] = np.where(rng.random(n) < 0.02, rng.exponential(3, n), 0.0)
    b["liq_short_volume"] = np.where(rng.random(n) < 0.02, rng.exponential(3, n), 0.0)
    return b


def _random_walk(n: int, seed: int, gaps: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.0015, n)))
    times = None
    if gaps:  # drop a few stretches: windows are in data time
        idx = pd.date_range("2025-01-01", periods=n + 200, freq="1min", tz="UTC")
        keep = np.ones(n + 200, dtype=bool)
        for start in rng.choice(n, 4, replace=False):
            keep[start:start + 50] = False
        times = idx[keep][:n]
    return synthetic_bars(closes, volumes=rng.uniform(5, 50, n) * (1 + 20 * (rng.random(n) < 0.01)),
                          times=times)


def _assert_all_equal(bars: pd.DataFrame, configs: dict) -> dict:
    before = bars.copy(deep=True)
    results = evaluate_all(bars, configs)
    assert list(results) == list(configs)
    pd.testing.assert_frame_equal(bars, before)  # input not mutated
    for kind, cfg in configs.items():
        r = results[kind]
        assert r.error is None, f"{kind}: {r.error}"
        expected = GHOSTS[kind].evaluate(bars, _config(kind, cfg))
        pd.testing.assert_frame_equal(r.drafts, expected, check_exact=True)
    pd.testing.assert_frame_equal(bars, before)
    return results


def _defaults() -> dict:
    return {kind: spec.config_cls() for kind, spec in GHOSTS.items()}


@pytest.mark.parametrize("gaps", [False, True])
def test_synthetic_equals_each_ghost(gaps: bool) -> None:
    bars = _with_synthetic_inputs(_random_walk(20_000, seed=3, gaps=gaps))
    results = _assert_all_equal(bars, _defaults())
    # the busy paths really ran: some ghosts fired, reasons were written
    assert sum(int((r.drafts["side"] != 0).sum()) for r in results.values()) > 0


def test_non_default_configs_and_params_mappings() -> None:
    bars = _with_synthetic_inputs(_random_walk(12_000, seed=5))
    configs = {
        "trend_filter": {"fast_periods": 20, "slow_periods": 60},  # not the gate config: not shared
        "cvd_detector": {"cvd_window_minutes": 120},
        "liquidation_hunter": {"mode": "follow"},
        "whale_follower": None,
        "spike_fader": GHOSTS["spike_fader"].config_cls(),
    }
    results = evaluate_all(bars, configs)
    for kind, params in configs.items():
        cfg = _config(kind, params)
        assert results[kind].error is None, results[kind].error
        pd.testing.assert_frame_equal(results[kind].drafts, GHOSTS[kind].evaluate(bars, cfg))


def test_real_90_days_idle_and_synthetic_busy() -> None:
    real = load_freqtrade_1m()
    _assert_all_equal(real, _defaults())
    _assert_all_equal(_with_synthetic_inputs(real), _defaults())


def test_live_window_subset() -> None:
    real = load_freqtrade_1m().iloc[-20_000:]
    window = real.iloc[-max(spec.warmup_minutes for spec in GHOSTS.values()) - 1:]
    _assert_all_equal(window, {"trend_filter": None, "whale_follower": None})


def test_errors_are_per_ghost(monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _random_walk(3_000, seed=1)
    spec = GHOSTS["spike_fader"]

    def boom(b: pd.DataFrame, cfg: object) -> pd.DataFrame:
        raise RuntimeError("ghost exploded")
    monkeypatch.setitem(GHOSTS, "spike_fader", dataclasses.replace(spec, evaluate=boom))
    res = evaluate_all(bars, {"spike_fader": None, "trend_filter": None, "nonsense": None,
                              "cvd_detector": {"no_such_param": 1}})
    assert "ghost exploded" in res["spike_fader"].error
    assert res["trend_filter"].ok
    assert "unknown ghost kind" in res["nonsense"].error
    assert "no_such_param" in res["cvd_detector"].error


def test_mutating_ghost_is_an_error_and_others_see_clean_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    bars = _random_walk(3_000, seed=2)
    spec = GHOSTS["spike_fader"]
    real_trend = GHOSTS["trend_filter"].evaluate

    def vandal(b: pd.DataFrame, cfg: object) -> pd.DataFrame:
        b.iloc[5, b.columns.get_loc("volume")] = 999.0  # writes into its input (still valid bars)
        return GHOSTS["trend_filter"].evaluate(b, GHOSTS["trend_filter"].config_cls())
    monkeypatch.setitem(GHOSTS, "spike_fader", dataclasses.replace(spec, evaluate=vandal))
    res = evaluate_all(bars, {"spike_fader": None, "trend_filter": None})
    assert "mutated its input bars" in res["spike_fader"].error
    pd.testing.assert_frame_equal(res["trend_filter"].drafts, real_trend(bars, GHOSTS["trend_filter"].config_cls()))


def test_invalid_bars_fail_every_ghost() -> None:
    bars = _random_walk(100, seed=4)
    bars.iloc[10, bars.columns.get_loc("close")] = np.nan
    res = evaluate_all(bars, {"spike_fader": None, "trend_filter": None})
    assert all("BarsError" in r.error for r in res.values())


# ---- validate_bars fast path

def test_fast_path_only_for_untouched_validated_frames() -> None:
    raw = _random_walk(500, seed=9)
    v = validate_bars(raw)
    assert is_validated(v) and not is_validated(raw)
    again = validate_bars(v)
    assert again is not v and is_validated(again)
    pd.testing.assert_frame_equal(again, v)
    # copies, slices and edited frames are foreign input: fully checked
    assert not is_validated(v.copy()) and not is_validated(v.iloc[:100])
    edited = validate_bars(raw)
    edited.iloc[3, edited.columns.get_loc("high")] = -5.0  # in place: copy-on-write moves the data
    assert not is_validated(edited)
    with pytest.raises(BarsError, match="high"):
        validate_bars(edited)
    # an edit to the fast-path copy never reaches the original, and vice versa
    again.iloc[0, 0] = 123.0
    assert v.iloc[0, 0] != 123.0 and is_validated(v)
    renamed = validate_bars(raw)
    renamed.index = renamed.index + pd.Timedelta(seconds=1)
    assert not is_validated(renamed)
    with pytest.raises(BarsError, match="whole minutes"):
        validate_bars(renamed)


def test_fast_path_frames_reject_numpy_writes() -> None:
    v = validate_bars(_random_walk(200, seed=8))
    with pytest.raises(ValueError):
        v["close"].to_numpy()[0] = 1.0
    with pytest.raises(ValueError):
        v.values[0, 0] = 1.0
    assert bars_mod.is_validated(v)
