"""Spike fader on synthetic bars: detection by time, volume confirmation, cooldown, levels, config."""

import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.engine.spike_fader import SpikeFaderConfig, evaluate, spike_moves
from apps.engine.types import DRAFT_COLUMNS, ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis, synthetic_bars  # noqa: F401

CFG = SpikeFaderConfig()
FLAT = 130  # enough history for the 15-minute window and the 100-minute volume lookback


def with_tail(tail: list[tuple[float, float, float, float, float]], base: float = 100.0,
              base_volume: float = 10.0) -> pd.DataFrame:
    """FLAT quiet bars at `base`, then explicit (open, high, low, close, volume) bars."""
    flat = synthetic_bars([base] * FLAT, volumes=base_volume)
    t = pd.date_range(flat.index[-1] + pd.Timedelta(minutes=1), periods=len(tail), freq="1min", tz="UTC")
    extra = pd.DataFrame(tail, columns=["open", "high", "low", "close", "volume"], index=t)
    return pd.concat([flat, extra])


def fired(drafts: pd.DataFrame) -> pd.DataFrame:
    return drafts[drafts["side"] != 0]


def test_up_spike_is_faded_short_with_levels_on_the_right_side() -> None:
    # +1.3 % close one bar after a quiet hour, high 102: the level 100 + 0.3 * 2 = 100.6 is nearer than
    # the 0.8 % target (100.4896) and more than min_target_pct from entry, so it is the target.
    bars = with_tail([(100.0, 102.0, 100.0, 101.3, 130.0)])
    d = evaluate(bars, CFG)
    assert tuple(d.columns) == DRAFT_COLUMNS and d.index.equals(bars.index)
    assert d["side"].dtype == np.int8
    sig = fired(d)
    assert len(sig) == 1 and sig.index[0] == bars.index[-1]
    row = sig.iloc[0]
    assert row["side"] == -1 and row["entry"] == 101.3
    assert row["target"] == pytest.approx(100.6)
    assert row["stop"] == pytest.approx(max(102.0 * 1.001, 101.3 * 1.006))
    assert row["target"] < row["entry"] < row["stop"]
    assert row["priority"] == 2 and row["max_hold_s"] == 3600.0
    ratio = (10.0 * 14 + 130.0) / 15 / 10.0  # window mean / lookback mean
    conf = min(1.0, 0.5 + 0.25 * min(max(1.3 / 1.2 - 1, 0), 1) + 0.25 * min(max(ratio / 1.5 - 1, 0), 1))
    assert row["confidence"] == pytest.approx(conf)
    assert row["size_mult"] == pytest.approx(0.7 + 0.3 * conf)
    assert row["reason"] == (f"up-spike +1.30% in 15 min (threshold 1.2%), volume x{ratio:.2f} -> fade SHORT")


def test_down_spike_is_faded_long() -> None:
    bars = with_tail([(100.0, 100.0, 98.0, 98.7, 130.0)])
    row = fired(evaluate(bars, CFG)).iloc[0]
    assert row["side"] == 1 and row["entry"] == 98.7
    assert row["stop"] == pytest.approx(min(98.0 * 0.999, 98.7 * 0.994))
    assert row["stop"] < row["entry"] < row["target"]
    assert "down-spike -1.30%" in row["reason"] and row["reason"].endswith("fade LONG")


def test_retracement_level_beyond_entry_falls_back_to_pct_target() -> None:
    # high 105 but close 101.3: the 70 %-retracement level 101.5 is ABOVE a short's entry (the prototype
    # put its target there and closed at once at a loss); the 0.8 % target is used instead.
    bars = with_tail([(100.0, 105.0, 100.0, 101.3, 130.0)])
    row = fired(evaluate(bars, CFG)).iloc[0]
    assert row["target"] == pytest.approx(101.3 * (1 - 0.008))
    assert row["stop"] == pytest.approx(105.0 * 1.001)


def test_retracement_level_too_close_to_entry_falls_back_to_pct_target() -> None:
    # level 100 + 0.3 * 3.3 = 100.99 is only 0.26 % below 101.25: cannot pay the round trip.
    bars = with_tail([(100.0, 103.3, 100.0, 101.25, 130.0)])
    row = fired(evaluate(bars, CFG)).iloc[0]
    assert row["target"] == pytest.approx(101.25 * (1 - 0.008))


def test_stop_never_closer_than_min_stop() -> None:
    bars = with_tail([(100.0, 101.3, 100.0, 101.3, 130.0)])
    row = fired(evaluate(bars, CFG)).iloc[0]
    assert row["stop"] == pytest.approx(101.3 * 1.006)  # 101.3 * 1.001 would be too close


def test_below_threshold_no_signal() -> None:
    bars = with_tail([(100.0, 101.19, 100.0, 101.19, 130.0)])
    d = evaluate(bars, CFG)
    assert fired(d).empty and (d["reason"] == "").all()


def test_volume_not_confirmed_no_signal_but_a_reason() -> None:
    bars = with_tail([(100.0, 101.5, 100.0, 101.5, 10.0)])
    d = evaluate(bars, CFG)
    assert fired(d).empty
    assert d["reason"].iloc[-1] == ("up-spike +1.50% in 15 min (threshold 1.2%) "
                                    "but volume x1.00 < x1.5 -> no trade")


def test_nan_volume_means_no_signal() -> None:
    bars = with_tail([(100.0, 101.5, 100.0, 101.5, np.nan)])
    d = evaluate(bars, CFG)
    assert fired(d).empty and "volume data missing" in d["reason"].iloc[-1]
    bars = with_tail([(100.0, 101.5, 100.0, 101.5, 130.0)])
    bars.iloc[50, bars.columns.get_loc("volume")] = np.nan  # inside the 100-minute lookback
    assert fired(evaluate(bars, CFG)).empty


def test_zero_lookback_volume_means_no_signal() -> None:
    bars = with_tail([(100.0, 101.5, 100.0, 101.5, 130.0)], base_volume=0.0)
    d = evaluate(bars, CFG)
    assert fired(d).empty and "no volume traded in the 100-minute lookback" in d["reason"].iloc[-1]


def test_short_history_has_no_volume_ratio() -> None:
    bars = synthetic_bars([100.0] * 30 + [101.5], volumes=[10.0] * 30 + [40.0])
    d = evaluate(bars, CFG)
    assert fired(d).empty and "of 100 lookback minutes present" in d["reason"].iloc[-1]


def test_window_is_data_time_not_samples() -> None:
    # 40 bars, one every 2 minutes: 15 samples back is 30 minutes back. The move is measured against the
    # bar that opened exactly 15 minutes earlier, which does not exist -> NaN, never a 30-minute move.
    times = pd.date_range("2025-01-01", periods=40, freq="2min", tz="UTC")
    bars = synthetic_bars(np.linspace(100, 104, 40), times=times)
    assert spike_moves(bars, CFG).isna().all()
    # On a minute grid with one missing bar, the move still uses the bar 15 minutes back.
    times = pd.date_range("2025-01-01", periods=60, freq="1min", tz="UTC").delete(20)
    closes = np.linspace(100, 101, 59)
    bars = synthetic_bars(closes, times=times)
    moves = spike_moves(bars, CFG)
    by_time = pd.Series(closes, index=times)
    for t in times:
        ref_t = t - pd.Timedelta(minutes=15)
        expected = by_time[t] / by_time[ref_t] - 1 if ref_t in by_time.index else np.nan
        assert (math.isnan(expected) and math.isnan(moves[t])) or moves[t] == expected
    assert moves.isna().sum() == 15 + 1  # the first 15 minutes, and the bar whose reference is the hole


def test_cooldown_in_data_time() -> None:
    # a sustained move: every bar of the tail is >= 1.2 % above its reference and volume stays high
    tail = [(100.0 + i * 0.2, 100.2 + i * 0.2, 100.0 + i * 0.2, 100.2 + i * 0.2, 50.0) for i in range(20)]
    bars = with_tail(tail)
    d = evaluate(bars, CFG)
    times = fired(d).index
    assert len(times) >= 2
    assert (np.diff(times.as_unit("s").asi8) >= 300).all()
    blocked = d[d["reason"].str.contains("cooldown")]
    assert len(blocked) > 0 and (blocked["side"] == 0).all()
    no_cd = evaluate(bars, SpikeFaderConfig(cooldown_seconds=0))
    cand = np.abs(spike_moves(bars, CFG)) >= 0.012
    assert len(fired(no_cd)) > len(times) and (fired(no_cd).index == bars.index[cand.to_numpy()]).all()


def test_empty_and_quiet_input() -> None:
    empty = synthetic_bars([100.0]).iloc[:0]
    assert evaluate(empty, CFG).empty
    quiet = evaluate(synthetic_bars([100.0] * 300), CFG)
    assert (quiet["side"] == 0).all() and quiet["entry"].isna().all()


# -- config -------------------------------------------------------------------------------------------

def test_defaults_are_the_prototypes() -> None:
    c = SpikeFaderConfig()
    assert (c.spike_threshold_pct, c.window_minutes, c.take_profit_pct, c.retracement, c.min_stop_pct,
            c.cooldown_seconds, c.max_hold_seconds, c.volume_lookback_minutes) == (
        1.2, 15, 0.8, 0.3, 0.6, 300.0, 3600.0, 100)
    assert SpikeFaderConfig.from_params(c.to_params()) == c
    assert SpikeFaderConfig.from_params(None) == c


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"spike_threshold_pct": 0}, "spike_threshold_pct must be > 0 and < 50 (percent), got 0.0"),
        ({"spike_threshold_pct": 75}, "spike_threshold_pct must be > 0 and < 50"),
        ({"take_profit_pct": 1.5}, "take_profit_pct (1.5 %) must be below spike_threshold_pct (1.2 %)"),
        ({"retracement": 1.0}, "retracement must be >= 0 and < 1"),
        ({"min_stop_pct": 0}, "min_stop_pct must be > 0"),
        ({"window_minutes": 0}, "window_minutes must be >= 1 and <= 1440 (minutes), got 0"),
        ({"window_minutes": 15.5}, "window_minutes must be a whole number, got 15.5"),
        ({"window_minutes": "15"}, "window_minutes must be an integer, got '15'"),
        ({"window_minutes": True}, "window_minutes must be an integer, got True"),
        ({"spike_threshold_pct": float("nan")}, "spike_threshold_pct must be a finite number, got nan"),
        ({"spike_threshold_pct": "1.2"}, "spike_threshold_pct must be a number, got '1.2'"),
        ({"cooldown_seconds": -1}, "cooldown_seconds must be >= 0"),
        ({"max_hold_seconds": 0}, "max_hold_seconds must be >= 60"),
        ({"min_volume_ratio": 0}, "min_volume_ratio must be > 0"),
        ({"threshold": 1.5}, "unknown spike_fader parameter(s): threshold; allowed: spike_threshold_pct"),
        ([("spike_threshold_pct", 1.2)], "params must be a mapping"),
    ],
)
def test_config_errors_are_clear(params, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SpikeFaderConfig.from_params(params)
    assert message in str(err.value)


def test_config_accepts_json_like_numbers() -> None:
    c = SpikeFaderConfig.from_params({"window_minutes": 20.0, "spike_threshold_pct": Decimal("1.5"),
                                      "cooldown_seconds": 600})
    assert c.window_minutes == 20 and isinstance(c.window_minutes, int)
    assert c.spike_threshold_pct == 1.5 and c.cooldown_seconds == 600.0
    assert c.warmup_minutes >= c.window_minutes + c.volume_lookback_minutes


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        CFG.spike_threshold_pct = 2.0  # type: ignore[misc]
