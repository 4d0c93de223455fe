"""run_guarded: exceptions become tracebacks, mutated input and malformed output are flagged."""

import numpy as np
import pandas as pd

from apps.engine.guard import run_guarded
from apps.engine.spike_fader import SpikeFaderConfig, evaluate
from tests.datafiles import _flush_redis, services_use_test_redis, synthetic_bars  # noqa: F401

CFG = SpikeFaderConfig()


def bars() -> pd.DataFrame:
    return synthetic_bars(np.linspace(100, 101, 200), volumes=5.0)


def test_clean_ghost_passes() -> None:
    b = bars()
    res = run_guarded(evaluate, b, CFG)
    assert res.ok and res.drafts is not None and len(res.drafts) == len(b)


def test_exception_becomes_error_with_traceback() -> None:
    def raising_ghost(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.DataFrame:
        raise RuntimeError("exchange said no")

    res = run_guarded(raising_ghost, bars(), CFG)
    assert not res.ok and res.drafts is None
    assert res.error.startswith("Traceback (most recent call last)")
    assert "raising_ghost" in res.error and "RuntimeError: exchange said no" in res.error


def test_mutating_ghost_is_flagged_and_caller_frame_untouched() -> None:
    def mutating_ghost(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.DataFrame:
        bars.loc[bars.index[-1], "volume"] = 0.0  # writes into its input
        return evaluate(bars, cfg)

    b = bars()
    before = b.copy(deep=True)
    res = run_guarded(mutating_ghost, b, CFG)
    assert not res.ok and res.drafts is None
    assert "mutated its input bars" in res.error and "column 'volume' changed" in res.error
    assert "mutating_ghost" in res.error
    pd.testing.assert_frame_equal(b, before)


def test_ghost_adding_a_column_is_flagged() -> None:
    def adds_column(bars: pd.DataFrame, cfg: SpikeFaderConfig) -> pd.DataFrame:
        bars["sma"] = bars["close"].rolling(5).mean()
        return evaluate(bars[["open", "high", "low", "close", "volume"]], cfg)

    res = run_guarded(adds_column, bars(), CFG)
    assert not res.ok and "columns changed" in res.error


def test_malformed_output_is_flagged() -> None:
    res = run_guarded(lambda b, c: [1, 2, 3], bars(), CFG)
    assert not res.ok and "returned list" in res.error
    res = run_guarded(lambda b, c: evaluate(b, c).drop(columns=["stop"]), bars(), CFG)
    assert not res.ok and "missing columns ['stop']" in res.error
    res = run_guarded(lambda b, c: evaluate(b, c).iloc[:-1], bars(), CFG)
    assert not res.ok and "index different" in res.error
