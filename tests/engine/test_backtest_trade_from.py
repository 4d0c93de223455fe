"""`BacktestConfig.trade_from`: bars before it are warm-up only. Walking the whole series from trade_from must
equal walking only the bars from there on with the same (full-history) drafts: same trades, fates, equity.
On the real 90-day file, so the comparison covers many trades."""

import dataclasses

import pandas as pd
import pytest

from apps.engine.backtest import BacktestConfig, GhostSetup, evaluate_ghosts, run_backtest
from tests.datafiles import BTC_90D, _flush_redis, load_freqtrade_1m, require, services_use_test_redis  # noqa: F401

PARAMS = {"spike_threshold_pct": 0.8, "take_profit_pct": 0.5, "min_volume_ratio": 1.2}


def test_trading_from_a_bar_equals_walking_only_the_bars_after_it() -> None:
    require(BTC_90D)
    bars = load_freqtrade_1m()
    ghosts = [GhostSetup(ghost_id=1, name="fader", kind="spike_fader", config=PARAMS)]
    drafts = evaluate_ghosts(bars, ghosts)
    k = len(bars) // 3
    start = bars.index[k]
    cfg = BacktestConfig()
    full = run_backtest(bars, ghosts, dataclasses.replace(cfg, trade_from=start), drafts=drafts)
    cut = run_backtest(bars.iloc[k:], ghosts, cfg, drafts={1: drafts[1].iloc[k:]})
    assert len(full.trades) >= 5, "the stretch must trade for the comparison to mean anything"
    assert full.trades == cut.trades
    assert min(t.signal_time for t in full.trades) >= start
    pd.testing.assert_frame_equal(full.fates, cut.fates)
    pd.testing.assert_series_equal(full.equity, cut.equity)
    assert full.exposure == cut.exposure
    assert full.final_equity == cut.final_equity
    # without trade_from the warm-up stretch trades too
    assert run_backtest(bars, ghosts, cfg, drafts=drafts).trades[0].signal_time < start


def test_trade_from_after_the_last_bar_is_an_error() -> None:
    require(BTC_90D)
    bars = load_freqtrade_1m().iloc[:500]
    ghosts = [GhostSetup(ghost_id=1, name="fader", kind="spike_fader")]
    with pytest.raises(ValueError, match="no bars at or after trade_from"):
        run_backtest(bars, ghosts, BacktestConfig(trade_from=bars.index[-1] + pd.Timedelta(minutes=1)))
