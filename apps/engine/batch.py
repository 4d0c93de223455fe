"""Evaluate several ghosts on the same bars at once: validate once, compute the shared states once.

Every ghost validates its input, and the liquidation hunter and the whale follower gate on trend_state
and cvd_state, which the trend and CVD ghosts compute anyway. Run one by one (registry / run_guarded),
five ghosts validate the bars five times and compute the trend filter up to three times. `evaluate_all`
gives exactly the same drafts (tests/engine/test_batch.py compares them frame for frame, reasons
included) at a fraction of the cost:

* the bars are validated ONCE; each ghost gets a copy-on-write shallow copy of the validated frame, which
  validate_bars recognises as already checked (apps.engine.bars.is_validated) instead of checking again;
* the trend filter's `_compute` and the CVD detector's `_detail` run at most once per config; the states
  are handed to the gated ghosts through their `trend=` / `cvd=` keyword arguments ONLY when the state was
  computed anyway (the trend / CVD ghost is in the batch) AND with the config those ghosts gate on (the
  DEFAULT TrendConfig / CvdConfig, whale_follower._gate_configs): a gated ghost on its own computes its
  gates on short segments around its rare candidate bars, which is cheaper than a full state it would not
  otherwise need;
* each ghost stays guarded like apps.engine.guard.run_guarded: an exception (also one raised while
  computing a shared state) becomes that ghost's error and the others still run; a ghost changing the
  bars it was handed is an error; its output is checked. The caller's frame is never handed to a ghost.
  The mutation check is O(columns) instead of a value-by-value comparison: the ghost's frame shares the
  validated data copy-on-write, so an untouched frame still points at the same memory, and a changed one
  (pandas moves written data) falls back to run_guarded's full comparison and message.

Pure: numpy/pandas and the engine only.
"""

import traceback
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from apps.engine import cvd as cvd_mod
from apps.engine import liquidation_hunter, whale_follower
from apps.engine import trend as trend_mod
from apps.engine.bars import data_addresses, is_validated, validate_bars
from apps.engine.guard import GuardResult, check_output
from apps.engine.registry import GHOSTS, _config
from apps.engine.types import GhostConfig

# Ghosts that take precomputed gates as trend= / cvd= keyword arguments (with the DEFAULT gate configs).
_GATED = {"liquidation_hunter": liquidation_hunter.evaluate, "whale_follower": whale_follower.evaluate}
# Shared states are computed first, so the gated ghosts can reuse them.
_ORDER = {"trend_filter": 0, "cvd_detector": 1}


class _Shared:
    """Lazily computed, memoised per config: the trend filter's _State and the CVD detector's _Detail.

    A computation that raises is not memoised: every ghost that needs it raises (and is marked failed)
    on its own, inside its own guard.
    """

    def __init__(self, bars: pd.DataFrame) -> None:
        self.bars = bars
        self.trend: dict[trend_mod.TrendConfig, Any] = {}
        self.cvd: dict[cvd_mod.CvdConfig, Any] = {}

    def trend_state(self, cfg: trend_mod.TrendConfig) -> Any:
        if cfg not in self.trend:
            self.trend[cfg] = trend_mod._compute(self.bars, cfg) if len(self.bars) else None
        return self.trend[cfg]

    def cvd_detail(self, cfg: cvd_mod.CvdConfig) -> Any:
        if cfg not in self.cvd:
            self.cvd[cfg] = cvd_mod._detail(self.bars, cfg, full=True)
        return self.cvd[cfg]

    def gates(self) -> dict[str, pd.DataFrame]:
        """trend= / cvd= for the gated ghosts: only states already computed with the gates' configs."""
        trend_cfg, cvd_cfg = whale_follower._gate_configs()
        out = {}
        st = self.trend.get(trend_cfg)
        if st is not None:
            out["trend"] = st.frame
        d = self.cvd.get(cvd_cfg)
        if d is not None:
            out["cvd"] = d.state
        return out


def _ghost_fn(kind: str, shared: _Shared) -> Callable[[pd.DataFrame, Any], pd.DataFrame]:
    """fn(bars, cfg) for one ghost: the registry's evaluate, or, when that is the stock function, an
    equivalent drawing on the shared states (same output as GHOSTS[kind].evaluate)."""
    fn = GHOSTS[kind].evaluate
    if kind == "trend_filter" and fn is trend_mod.evaluate:
        def trend_ghost(bars: pd.DataFrame, cfg: trend_mod.TrendConfig) -> pd.DataFrame:
            bars = validate_bars(bars)
            return trend_mod._drafts(bars, cfg, shared.trend_state(cfg) if len(bars) else None)
        return trend_ghost
    if kind == "cvd_detector" and fn is cvd_mod.evaluate:
        def cvd_ghost(bars: pd.DataFrame, cfg: cvd_mod.CvdConfig) -> pd.DataFrame:
            validate_bars(bars)  # the same checks (and errors) as cvd.evaluate; the detail is shared
            return cvd_mod._drafts(shared.cvd_detail(cfg), cfg)
        return cvd_ghost
    if kind in _GATED and fn is _GATED[kind]:
        def gated_ghost(bars: pd.DataFrame, cfg: Any) -> pd.DataFrame:
            return fn(bars, cfg, **shared.gates())
        gated_ghost.__qualname__ = f"{kind}.evaluate"
        return gated_ghost
    return fn


def evaluate_all(bars: pd.DataFrame,
                 configs: Mapping[str, GhostConfig | Mapping[str, Any] | None]) -> dict[str, GuardResult]:
    """Evaluate the ghosts `configs` names (kind -> config, params mapping or None for the defaults).

    Returns kind -> GuardResult (drafts on bars' index, or error text), in the order of `configs`; each
    result's drafts equal `GHOSTS[kind].evaluate(bars, config)` exactly. Bars that fail validation, an
    unknown kind or invalid params make every affected ghost's error (never an exception here); `bars`
    is not modified.
    """
    results: dict[str, GuardResult] = {}
    try:
        valid = validate_bars(bars)
    except Exception:
        error = traceback.format_exc()
        return {kind: GuardResult(drafts=None, error=error) for kind in configs}
    shared = _Shared(valid)
    for kind in sorted(configs, key=lambda k: _ORDER.get(k, 2)):
        try:
            cfg = _config(kind, configs[kind])
        except Exception:
            results[kind] = GuardResult(drafts=None, error=traceback.format_exc())
            continue
        fn = _ghost_fn(kind, shared)
        # a shallow, copy-on-write copy marked as validated: nothing the ghost does to it reaches `valid`
        work = validate_bars(valid)
        try:
            drafts = fn(work, cfg)
        except Exception:
            results[kind] = GuardResult(drafts=None, error=traceback.format_exc())
            continue
        unchanged = (is_validated(work) and work.index.is_(valid.index)
                     and data_addresses(work) == data_addresses(valid))
        results[kind] = check_output(fn, valid, work, drafts, unchanged=unchanged)
    return {kind: results[kind] for kind in configs}
