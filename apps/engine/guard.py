"""Strategy safety wrappers: run a ghost without letting it crash the caller or corrupt its input,
and detect look-ahead by comparing truncated and full evaluations.

Modelled on Freqtrade's `strategy_wrapper` (exceptions become a reportable error, inputs are copied,
a changed dataframe is an error) and its look-ahead analysis (re-run on shorter data and compare). A
ghost that raises is marked degraded with the traceback (DESIGN §7); the look-ahead check is what
keeps "no look-ahead, ever" (DESIGN §4) a tested property rather than a promise.
"""

import dataclasses
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from apps.engine.types import DRAFT_COLUMNS

GhostFn = Callable[[pd.DataFrame, Any], pd.DataFrame]


@dataclasses.dataclass(frozen=True)
class GuardResult:
    """drafts: the ghost's output (None on failure); error: full traceback or explanation (None if ok)."""

    drafts: pd.DataFrame | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_guarded(fn: GhostFn, bars: pd.DataFrame, cfg: Any) -> GuardResult:
    """Call fn(copy of bars, cfg); never raises for a misbehaving ghost.

    Failures reported in `error` (drafts None): any Exception (with its traceback); the ghost
    changing the bars it was handed (index, columns or any value; a ghost that writes into its input
    could be writing tomorrow's data into today's row); output that is not a DataFrame with
    DRAFT_COLUMNS on the same index as the bars. The caller's `bars` are never passed in, so they
    cannot be changed whatever the ghost does.
    """
    work = bars.copy(deep=True)
    try:
        drafts = fn(work, cfg)
    except Exception:
        return GuardResult(drafts=None, error=traceback.format_exc())
    return check_output(fn, bars, work, drafts)


def check_output(fn: GhostFn, bars: pd.DataFrame, work: pd.DataFrame, drafts: Any,
                 unchanged: bool = False) -> GuardResult:
    """run_guarded's checks of a finished call fn(work, cfg): `work` must still equal `bars`, `drafts` must
    be a drafts frame on bars' index. `unchanged`: the caller has proven work untouched (skips the
    value-by-value comparison; apps.engine.batch proves it from copy-on-write data addresses)."""
    if not unchanged and not (work.index.equals(bars.index) and list(work.columns) == list(bars.columns)
                              and work.equals(bars)):
        return GuardResult(drafts=None, error=f"ghost {_name(fn)} mutated its input bars "
                                              f"({_diff(bars, work)}); ghosts must treat bars as read-only")
    if not isinstance(drafts, pd.DataFrame):
        return GuardResult(drafts=None, error=f"ghost {_name(fn)} returned {type(drafts).__name__}, "
                                              "expected a DataFrame of drafts")
    missing = [c for c in DRAFT_COLUMNS if c not in drafts.columns]
    if missing or not drafts.index.equals(bars.index):
        why = f"missing columns {missing}" if missing else "an index different from the bars'"
        return GuardResult(drafts=None, error=f"ghost {_name(fn)} returned drafts with {why}")
    return GuardResult(drafts=drafts, error=None)


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _diff(before: pd.DataFrame, after: pd.DataFrame) -> str:
    """Short human description of how `after` differs from `before`."""
    if not after.index.equals(before.index):
        return f"index changed: {len(before)} -> {len(after)} rows"
    if list(after.columns) != list(before.columns):
        return f"columns changed: {list(before.columns)} -> {list(after.columns)}"
    for c in before.columns:
        if not after[c].equals(before[c]):
            a, b = after[c].to_numpy(), before[c].to_numpy()
            with np.errstate(invalid="ignore"):
                neq = ~((a == b) | (pd.isna(a) & pd.isna(b)))
            i = int(np.argmax(neq)) if neq.any() else 0
            return f"column {c!r} changed, first at {before.index[i]}: {b[i]!r} -> {a[i]!r}"
    return "dtypes changed"


@dataclasses.dataclass(frozen=True)
class LookaheadViolation:
    """The output at `bar_time` (row `row`) differed when the series was cut after row `cut - 1`."""

    cut: int
    row: int
    bar_time: pd.Timestamp
    column: str
    truncated: Any
    full: Any


def find_lookahead(fn: GhostFn, bars: pd.DataFrame, cfg: Any, cuts: Iterable[int] | None = None,
                   n_cuts: int = 25) -> list[LookaheadViolation]:
    """Evaluate fn on bars[:cut] for many cuts and on the full bars; report rows that differ.

    A causal ghost's output at bar t depends only on bars <= t, so every row before the cut must be
    IDENTICAL (exact float equality, NaN equal to NaN) in both runs. Default cuts: `n_cuts` evenly
    spaced plus the row after each of the first `n_cuts` full-run signals (a cheating ghost differs
    exactly where it acted on the future). Returns the first differing row per cut; empty means clean.
    """
    full = fn(bars.copy(deep=True), cfg)
    n = len(bars)
    if cuts is None:
        chosen = set(np.linspace(1, n, num=min(n_cuts, n), dtype=int).tolist()) if n else set()
        if "side" in full.columns:
            sig = np.flatnonzero(full["side"].to_numpy() != 0)[:n_cuts]
            chosen.update((sig + 1).tolist())
        cuts = sorted(chosen)
    out: list[LookaheadViolation] = []
    for cut in cuts:
        if not 0 < cut <= n:
            continue
        part = fn(bars.iloc[:cut].copy(deep=True), cfg)
        ref = full.iloc[:cut]
        if len(part) != cut or list(part.columns) != list(full.columns):
            out.append(LookaheadViolation(cut, cut - 1, bars.index[cut - 1], "<shape>",
                                          part.shape, ref.shape))
            continue
        for col in full.columns:
            a, b = part[col].to_numpy(), ref[col].to_numpy()
            same = a == b
            if a.dtype.kind == "f":
                same |= np.isnan(a) & np.isnan(b)
            if not same.all():
                i = int(np.argmax(~same))
                out.append(LookaheadViolation(cut, i, bars.index[i], col, a[i], b[i]))
                break
    return out
