"""Registry: kinds, config from stored params, latest draft for the live path."""

import numpy as np
import pandas as pd
import pytest

from apps.engine.registry import DESK_KINDS, GHOSTS, config_from_params, latest_draft, warmup_minutes_for
from apps.engine.spike_fader import SpikeFaderConfig, evaluate
from apps.engine.types import DRAFT_COLUMNS, ConfigError, Draft
from tests.datafiles import _flush_redis, services_use_test_redis, synthetic_bars  # noqa: F401


def spike_window() -> pd.DataFrame:
    bars = synthetic_bars([100.0] * 200 + [101.5], volumes=[10.0] * 200 + [200.0])
    return bars


def test_spike_fader_is_registered() -> None:
    spec = GHOSTS["spike_fader"]
    assert spec.kind == "spike_fader" and spec.config_cls is SpikeFaderConfig and spec.evaluate is evaluate
    assert spec.title and spec.warmup_minutes == SpikeFaderConfig().warmup_minutes
    assert spec.warmup_minutes >= 15 + 100


def test_config_from_params() -> None:
    assert config_from_params("spike_fader", {"spike_threshold_pct": 2.0}).spike_threshold_pct == 2.0
    assert config_from_params("spike_fader", None) == SpikeFaderConfig()
    with pytest.raises(ConfigError, match="unknown ghost kind 'martingale'; known kinds: ") as err:
        config_from_params("martingale", {})
    assert all(kind in str(err.value) for kind in GHOSTS)
    with pytest.raises(ConfigError, match="unknown spike_fader parameter"):
        config_from_params("spike_fader", {"foo": 1})


def test_latest_draft_returns_the_last_bar_or_none() -> None:
    bars = spike_window()
    d = latest_draft("spike_fader", {}, bars)
    assert isinstance(d, Draft) and d.side == -1 and d.bar_time == bars.index[-1]
    assert isinstance(d.side, int) and isinstance(d.confidence, float) and isinstance(d.reason, str)
    assert d.target < d.entry < d.stop and "fade SHORT" in d.reason
    assert latest_draft("spike_fader", SpikeFaderConfig(), bars) == d
    assert latest_draft("spike_fader", {}, bars.iloc[:-1]) is None
    # a stricter threshold silences it
    assert latest_draft("spike_fader", {"spike_threshold_pct": 2.0, "take_profit_pct": 1.0}, bars) is None
    with pytest.raises(ConfigError, match="needs a params mapping"):
        latest_draft("spike_fader", 42, bars)  # type: ignore[arg-type]


def test_warmup_follows_params() -> None:
    longer = warmup_minutes_for("spike_fader", {"volume_lookback_minutes": 300})
    assert longer > GHOSTS["spike_fader"].warmup_minutes


def test_drafts_frame_shape() -> None:
    d = evaluate(spike_window(), SpikeFaderConfig())
    assert tuple(d.columns) == DRAFT_COLUMNS
    assert d["side"].dtype == np.int8 and d["confidence"].dtype == np.float64


def test_the_five_ghosts_are_registered_with_a_state_summary() -> None:
    assert set(DESK_KINDS) == {"trend_filter", "cvd_detector", "liquidation_hunter", "spike_fader", "whale_follower"}
    assert set(GHOSTS) == {*DESK_KINDS, "textbook_fader"}  # plus the lab-only textbook fader
    for spec in GHOSTS.values():
        assert spec.title and spec.warmup_minutes == warmup_minutes_for(spec.kind) and spec.summary is not None


def test_every_ghost_summarises_its_state_on_a_live_window() -> None:
    bars = spike_window()
    for spec in GHOSTS.values():
        summary = spec.summary(bars, spec.config_cls())
        assert summary and all(isinstance(k, str) and isinstance(v, str) for k, v in summary.items()), spec.kind
    assert "fade SHORT" not in GHOSTS["spike_fader"].summary(bars, SpikeFaderConfig())["last_fade"]
    assert GHOSTS["spike_fader"].summary(bars, SpikeFaderConfig())["last_fade"].startswith("SHORT at ")
