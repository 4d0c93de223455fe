"""Ghosts of your own: the plug-in API contract, its validation, and the guards a plug-in must pass (issue 11).

Pure: numpy/pandas and the engine only (the Django-side discovery is `apps.ghosts.plugins`).

The contract
------------
A plug-in is a Python module (a file in `HFT_GHOSTS_DIR`, or a module/object an installed package names in
the `hftweb.ghosts` entry-point group) that defines, exactly as the built-in ghosts do:

- ``KIND``: the registry key, ``[a-z][a-z0-9_]{2,31}``, not a built-in kind (stored as ``Ghost.kind``);
- ``TITLE``: the human name shown on the Ghosts page and in the lab;
- ``Config``: a FROZEN dataclass subclassing ``GhostConfig`` (``KIND: ClassVar[str] = KIND``) whose defaults
  are valid; ``__post_init__`` raises ``ConfigError`` on a bad value (``check_range`` says which and why,
  and parameter search reads its bounds from there); a ``warmup_minutes`` property (or a module constant
  ``WARMUP_MINUTES``): the minutes of history the live window needs for the output at the last bar to equal
  the whole-history output;
- ``evaluate(bars, cfg) -> drafts``: causal and vectorised; ``bars`` is the engine's 1-minute frame (open
  times, UTC, float64 ``BAR_COLUMNS``; an input the source lacks is NaN, never 0), the result one row per bar
  (``drafts_frame``/``idle_draft_arrays``): side +1/-1/0, confidence 0..1, priority, entry (the bar's
  close, the reference), stop and target on the right sides of the entry, size_mult > 0, max_hold_s
  (data-time seconds, or NaN), reason (text with the numbers). The row of bar t may read bars <= t only;
- optional ``state_summary(bars, cfg) -> {label: text}`` (the Ghosts page's "what it sees"), ``INPUTS``
  (keys of ``registry.INPUTS`` it cannot draft without) and ``DESK = False`` (a lab-only ghost).

A module may instead define ``GHOST = GhostSpec(...)`` directly; an entry point may name a GhostSpec or a module.

The guards (`check_spec`), run by ``manage.py check_ghost`` on real data and by the desk at every start on
`synthetic_bars()`; a plug-in that fails one is refused (never registered, never evaluated) with the reason:

1. contract: the names above, a frozen valid config whose params round-trip, a sane warm-up;
2. exceptions and input mutation: ``apps.engine.guard`` (the ghost gets a copy; a changed copy is an error);
3. drafts: ``draft_problem`` (sides, levels on the right side, finite numbers where a draft fires);
4. NaN handling: the same bars without any input beyond OHLCV (all NaN), with a feed gap, a window shorter
   than the warm-up, one bar and no bars: no exception, valid drafts;
5. look-ahead: ``guard.find_lookahead`` (truncated against full series, exact equality);
6. live = backtest: the output at sampled bars (every signal first) from a trailing window of
   ``warmup_minutes`` equals the whole-series output there (a too-short warm-up, or state that depends on
   where the series starts, e.g. an exponential average, fails here);
and it reports the warm-up, drafts per day and the evaluation speed (whole series and one live window).

At run time the registered spec's ``evaluate`` is ``checked_evaluate``: bad drafts raise ``PluginDraftError``,
which the evaluation's guard turns into the ghost's error, and the desk disables a plug-in on its first error
(``apps.ghosts.services.ghost_record_evaluation``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
import traceback
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

# The API a plug-in imports from here (one place, documented above): re-exported on purpose.
from apps.engine.bars import validate_bars
from apps.engine.guard import check_output, find_lookahead
from apps.engine.registry import INPUTS, GhostSpec
from apps.engine.types import (
    DRAFT_COLUMNS,
    ConfigError,
    Draft,
    GhostConfig,
    check_range,
    drafts_frame,
    idle_draft_arrays,
)

__all__ = [
    "ConfigError", "GhostConfig", "GhostSpec", "check_range", "drafts_frame", "idle_draft_arrays", "validate_bars",
    "PluginError", "PluginDraftError", "spec_from_object", "validate_spec", "draft_problem", "checked_evaluate",
    "check_spec", "synthetic_bars", "GhostReport", "Check",
]

KIND_RE = re.compile(r"[a-z][a-z0-9_]{2,31}")  # Ghost.kind is 32 characters
MAX_WARMUP_MINUTES = 30 * 24 * 60  # a live window is read from the database on every bar: 30 days at most
MAX_TITLE = 100


class PluginError(ValueError):
    """A plug-in that cannot be used; the message is shown to operators as is."""


class PluginDraftError(PluginError):
    """A plug-in returned drafts that break the contract (raised at run time, inside the evaluation's guard)."""


def spec_from_object(obj: Any, *, origin: str = "") -> GhostSpec:
    """The GhostSpec a plug-in defines: the object itself, its ``GHOST``, or built from the module's names.

    PluginError saying what is missing (with `origin`, e.g. the file) when it does not follow the contract.
    """
    where = f" ({origin})" if origin else ""
    if isinstance(obj, GhostSpec):
        return obj
    if isinstance(getattr(obj, "GHOST", None), GhostSpec):
        return obj.GHOST
    if not isinstance(obj, ModuleType):
        raise PluginError(f"a plug-in must be a module or a GhostSpec, got {type(obj).__name__}{where}")
    missing = [n for n in ("KIND", "TITLE", "Config", "evaluate") if not hasattr(obj, n)]
    if missing:
        raise PluginError(f"plug-in module {obj.__name__}{where} lacks {', '.join(missing)} "
                          "(a ghost module defines KIND, TITLE, Config and evaluate; see apps/engine/plugins.py)")
    cfg_cls = obj.Config
    warmup = getattr(obj, "WARMUP_MINUTES", None)
    if warmup is None:
        try:
            warmup = getattr(cfg_cls(), "warmup_minutes", None)
        except Exception as exc:
            raise PluginError(f"plug-in {obj.KIND!r}{where}: its Config() with the defaults fails: {exc}") from None
    if warmup is None:
        raise PluginError(f"plug-in {obj.KIND!r}{where} declares no warm-up: give Config a warmup_minutes "
                          "property or the module a WARMUP_MINUTES constant")
    inputs = getattr(obj, "INPUTS", ())
    inputs_fn = inputs if callable(inputs) else (lambda cfg, _i=tuple(inputs): _i)
    return GhostSpec(kind=obj.KIND, title=obj.TITLE, config_cls=cfg_cls, evaluate=obj.evaluate,
                     warmup_minutes=warmup, summary=getattr(obj, "state_summary", None),
                     desk=getattr(obj, "DESK", True), inputs=inputs_fn)


def validate_spec(spec: GhostSpec, *, taken: Iterable[str] = ()) -> list[str]:
    """The contract problems of `spec` (empty: it can be run). `taken`: kinds already registered."""
    problems: list[str] = []
    kind = spec.kind
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        problems.append(f"KIND {kind!r} must be 3-32 characters of a-z, 0-9 and _, starting with a letter")
    elif kind in set(taken):
        problems.append(f"KIND {kind!r} is already registered (a built-in ghost or another plug-in)")
    if not isinstance(spec.title, str) or not spec.title.strip() or len(spec.title) > MAX_TITLE:
        problems.append(f"TITLE must be non-empty text of at most {MAX_TITLE} characters, got {spec.title!r}")
    cls = spec.config_cls
    if not (isinstance(cls, type) and issubclass(cls, GhostConfig) and dataclasses.is_dataclass(cls)):
        problems.append("Config must be a dataclass subclassing apps.engine.plugins.GhostConfig")
        return problems
    if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        problems.append("Config must be frozen (@dataclasses.dataclass(frozen=True)): a ghost never changes its "
                        "own parameters while it runs")
    if cls.KIND != kind:
        problems.append(f"Config.KIND is {cls.KIND!r}, not the plug-in's KIND {kind!r} (its error messages name it)")
    try:
        cfg = cls()
        again = cls.from_params(cfg.to_params())
        if again != cfg:
            problems.append("Config.from_params(Config().to_params()) differs from Config(): the stored params "
                            "would not give back the same ghost")
    except Exception as exc:
        problems.append(f"Config() with the defaults, or its params round trip, fails: {type(exc).__name__}: {exc}")
        return problems
    if not callable(spec.evaluate):
        problems.append("evaluate must be a function evaluate(bars, cfg) -> drafts")
    warm = getattr(cfg, "warmup_minutes", spec.warmup_minutes)
    for what, w in (("warmup_minutes", spec.warmup_minutes), ("Config().warmup_minutes", warm)):
        if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WARMUP_MINUTES:
            problems.append(f"{what} must be a whole number of minutes from 1 to {MAX_WARMUP_MINUTES}, got {w!r}")
    if spec.summary is not None and not callable(spec.summary):
        problems.append("state_summary must be a function state_summary(bars, cfg) -> {label: text}")
    if not isinstance(spec.desk, bool):
        problems.append(f"DESK must be True or False, got {spec.desk!r}")
    try:
        needs = tuple(spec.inputs(cfg))
        unknown = [k for k in needs if k not in INPUTS]
        if unknown:
            problems.append(f"INPUTS {unknown} unknown; the inputs beyond OHLCV are {', '.join(INPUTS)}")
    except Exception as exc:
        problems.append(f"INPUTS fails on the default config: {type(exc).__name__}: {exc}")
    return problems


def draft_problem(drafts: Any, bars: pd.DataFrame) -> str | None:
    """What is wrong with a ghost's output for `bars`, or None. Idle rows (side 0) may hold anything but a
    bad side; a row that drafts must be a trade the executor can place."""
    if not isinstance(drafts, pd.DataFrame):
        return f"returned {type(drafts).__name__}, expected a DataFrame of drafts"
    missing = [c for c in DRAFT_COLUMNS if c not in drafts.columns]
    if missing:
        return f"drafts lack columns {missing}"
    if not drafts.index.equals(bars.index):
        return f"drafts have {len(drafts)} rows on an index different from the {len(bars)} bars'"
    try:
        side = np.asarray(drafts["side"].to_numpy(), dtype=np.float64)
    except (TypeError, ValueError):
        return "side is not numeric"
    bad = ~np.isin(side, (-1.0, 0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        return f"side must be -1, 0 or +1, got {drafts['side'].iloc[i]!r} at {bars.index[i]}"
    act = np.flatnonzero(side != 0)
    if not len(act):
        return None
    try:
        cols = {c: np.asarray(drafts[c].to_numpy()[act], dtype=np.float64)
                for c in ("confidence", "priority", "entry", "stop", "target", "size_mult", "max_hold_s")}
    except (TypeError, ValueError) as exc:
        return f"a numeric draft column holds something else: {exc}"
    s = side[act]
    e, st, tg = cols["entry"], cols["stop"], cols["target"]
    with np.errstate(invalid="ignore"):
        checks = [
            ("entry, stop and target must be finite prices > 0",
             ~(np.isfinite(e) & np.isfinite(st) & np.isfinite(tg) & (e > 0) & (st > 0) & (tg > 0))),
            ("a LONG needs stop < entry < target, a SHORT target < entry < stop",
             ~np.where(s > 0, (st < e) & (e < tg), (tg < e) & (e < st))),
            ("confidence must be from 0 to 1", ~((cols["confidence"] >= 0) & (cols["confidence"] <= 1))),
            ("size_mult must be a finite number > 0", ~(np.isfinite(cols["size_mult"]) & (cols["size_mult"] > 0))),
            ("max_hold_s must be NaN (no time stop) or seconds > 0",
             ~(np.isnan(cols["max_hold_s"]) | (cols["max_hold_s"] > 0))),
            ("priority must be a whole number",
             ~(np.isfinite(cols["priority"]) & (cols["priority"] == np.round(cols["priority"])))),
        ]
    for text, wrong in checks:
        if wrong.any():
            j = int(np.argmax(wrong))
            i = act[j]
            row = {c: _plain(drafts[c].iloc[i]) for c in ("side", "entry", "stop", "target", "confidence",
                                                          "size_mult", "max_hold_s", "priority")}
            return f"{text}; at {bars.index[i]}: {row}"
    reasons = drafts["reason"].to_numpy()[act]
    if not all(isinstance(r, str) for r in reasons):
        return "reason must be text on every row that drafts"
    return None


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def checked_evaluate(spec: GhostSpec) -> Callable[[pd.DataFrame, Any], pd.DataFrame]:
    """spec.evaluate that raises PluginDraftError on drafts breaking the contract (the registered plug-in's
    evaluate: bad drafts then become the ghost's error wherever it runs, desk, lab or parameter search)."""
    fn = spec.evaluate
    if getattr(fn, "__hft_checked__", False):
        return fn

    @functools.wraps(fn)
    def evaluate(bars: pd.DataFrame, cfg: Any) -> pd.DataFrame:
        drafts = fn(bars, cfg)
        problem = draft_problem(drafts, bars)
        if problem:
            raise PluginDraftError(f"plug-in {spec.kind} returned bad drafts: {problem}")
        return drafts

    evaluate.__hft_checked__ = True  # type: ignore[attr-defined]
    return evaluate


def synthetic_bars(n: int = 3000, seed: int = 11) -> pd.DataFrame:
    """Deterministic 1-minute bars for the load-time guards: a random walk with sharp 3-minute moves on high
    volume (so faders and breakouts draft), every input column filled (taker split, trades, whale and
    liquidation volumes, the last two NaN over the first third as a kline-only history would be) and a 7-minute
    feed gap. No files: the desk checks plug-ins at every start, wherever it runs."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0, 0.0006, n)
    vol = rng.lognormal(np.log(6), 0.8, n)
    for start in rng.choice(np.arange(50, max(n - 20, 51)), size=max(n // 200, 1), replace=False):
        r[start:start + 3] += rng.choice([-1, 1]) * rng.uniform(0.012, 0.025) / 3
        vol[start:start + 3] *= rng.uniform(4, 6)
    close = 60_000 * np.exp(np.cumsum(r))
    open_ = np.concatenate(([close[0]], close[:-1]))
    wick = np.abs(rng.normal(0, 0.0003, n))
    buy = vol * rng.uniform(0.2, 0.8, n)
    whale = np.where(rng.random(n) < 0.05, vol * 0.3, 0.0)
    liq = np.where(rng.random(n) < 0.03, vol * rng.uniform(0.1, 2.0, n), 0.0)
    third = n // 3
    bars = pd.DataFrame({
        "open": open_, "high": np.maximum(open_, close) * (1 + wick), "low": np.minimum(open_, close) * (1 - wick),
        "close": close, "volume": vol, "taker_buy_volume": buy, "taker_sell_volume": vol - buy,
        "trades": np.round(vol * 40), "whale_buy_volume": np.where(r > 0, whale, 0.0),
        "whale_sell_volume": np.where(r <= 0, whale, 0.0), "liq_long_volume": np.where(r < 0, liq, 0.0),
        "liq_short_volume": np.where(r >= 0, liq, 0.0),
    }, index=pd.date_range("2025-06-02", periods=n, freq="1min", tz="UTC", name="open_time"))
    for c in ("whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume"):
        bars.iloc[:third, bars.columns.get_loc(c)] = np.nan
    gap = n // 2
    return bars.drop(bars.index[gap:gap + 7])


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclasses.dataclass
class GhostReport:
    """What `check_spec` found. `reason` is the first failure in words (None when every check passed)."""

    kind: str
    checks: list[Check] = dataclasses.field(default_factory=list)
    warmup_minutes: int | None = None
    bars: int = 0
    days: float = 0.0
    drafts: int | None = None
    full_s: float | None = None  # one evaluation of the whole series
    window_ms: float | None = None  # median of one live-window evaluation (what each live bar costs)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and bool(self.checks)

    @property
    def reason(self) -> str | None:
        bad = next((c for c in self.checks if not c.ok), None)
        return None if bad is None else f"{bad.name}: {bad.detail}"

    @property
    def drafts_per_day(self) -> float | None:
        return None if self.drafts is None or self.days <= 0 else self.drafts / self.days

    def lines(self) -> list[str]:
        """The report as text lines (check_ghost prints them)."""
        out = [f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        if self.warmup_minutes is not None:
            out.append(f"warm-up: {self.warmup_minutes} minutes of history per live evaluation")
        if self.drafts is not None:
            per_day = self.drafts_per_day
            out.append(f"drafts: {self.drafts} on {self.bars:,} bars over {self.days:.1f} days"
                       + (f" = {per_day:.2f} per day" if per_day is not None else ""))
        if self.full_s is not None:
            rate = self.bars / self.full_s if self.full_s > 0 else float("inf")
            out.append(f"speed: whole series {self.full_s * 1000:.1f} ms ({rate:,.0f} bars/s)"
                       + (f"; one live window {self.window_ms:.2f} ms (median)" if self.window_ms is not None else ""))
        return out


def _first_line(tb: str) -> str:
    lines = [s for s in tb.strip().splitlines() if s.strip()]
    return lines[-1].strip() if lines else "error"


def _run(spec: GhostSpec, bars: pd.DataFrame, cfg: Any) -> tuple[pd.DataFrame | None, str | None, str]:
    """(drafts, failing check name, detail) of one guarded call; drafts None on failure."""
    work = bars.copy(deep=True)
    try:
        drafts = spec.evaluate(work, cfg)
    except Exception:
        tb = traceback.format_exc()
        return None, "exceptions", f"raised {_first_line(tb)}\n{tb}"
    res = check_output(spec.evaluate, bars, work, drafts)
    if not res.ok:
        name = "input mutation" if "mutated its input" in (res.error or "") else "drafts"
        return None, name, res.error or ""
    problem = draft_problem(drafts, bars)
    if problem:
        return None, "drafts", problem
    return drafts, None, ""


def check_spec(spec: GhostSpec, bars: pd.DataFrame, cfg: Any = None, *, taken: Iterable[str] = (),
               n_cuts: int = 25, live_samples: int = 60, seed: int = 0) -> GhostReport:
    """Run the plug-in guards on `bars` (any valid engine bars: real data for check_ghost, `synthetic_bars()`
    at load). `cfg`: the config to check (default: the defaults). Stops at the first failing check."""
    report = GhostReport(kind=str(spec.kind))
    checks = report.checks
    problems = validate_spec(spec, taken=taken)
    if problems:
        checks.append(Check("contract", False, "; ".join(problems)))
        return report
    cfg = spec.config_cls() if cfg is None else cfg
    warm = int(getattr(cfg, "warmup_minutes", spec.warmup_minutes))
    report.warmup_minutes = warm
    checks.append(Check("contract", True, f"KIND {spec.kind!r}, {spec.config_cls.__name__} frozen and valid, "
                                          f"warm-up {warm} min"))
    bars = validate_bars(bars)
    report.bars = len(bars)
    if len(bars) > 1:
        report.days = (bars.index[-1] - bars.index[0]).total_seconds() / 86400 + 1 / 1440
    t0 = time.perf_counter()
    full, failed, detail = _run(spec, bars, cfg)
    report.full_s = time.perf_counter() - t0
    if full is None:
        checks.append(Check(failed or "exceptions", False, f"on the whole series: {detail}"))
        return report
    checks.append(Check("exceptions", True, f"none on {len(bars):,} bars"))
    checks.append(Check("input mutation", True, "the bars it was handed are unchanged"))
    side = full["side"].to_numpy()
    report.drafts = int(np.count_nonzero(side))
    checks.append(Check("drafts", True, f"{report.drafts} drafts, every one with its levels on the right sides"))

    # NaN handling: the inputs a source may lack, a feed gap, and windows shorter than the warm-up.
    cut = bars.copy()
    cut.loc[:, [c for c in cut.columns if c not in ("open", "high", "low", "close", "volume")]] = np.nan
    if len(cut) > 40:
        mid = len(cut) // 2
        cut = cut.drop(cut.index[mid:mid + 13])
    variants = [("no inputs beyond OHLCV (all NaN) and a 13-minute gap", cut),
                (f"a window shorter than the warm-up ({max(warm // 2, 1)} bars)", bars.iloc[-max(warm // 2, 1):]),
                ("one bar", bars.iloc[-1:]), ("no bars", bars.iloc[:0])]
    for label, variant in variants:
        _, failed, detail = _run(spec, validate_bars(variant), cfg)
        if failed:
            checks.append(Check("NaN handling", False, f"on {label}: {failed}: {detail}"))
            return report
    checks.append(Check("NaN handling", True, "no error and valid drafts without taker/whale/liquidation inputs, "
                                              "across a gap, and on short windows"))

    try:
        found = find_lookahead(spec.evaluate, bars, cfg, n_cuts=n_cuts)
    except Exception:
        tb = traceback.format_exc()
        checks.append(Check("look-ahead", False, f"raised on a truncated series: {_first_line(tb)}\n{tb}"))
        return report
    if found:
        v = found[0]
        checks.append(Check("look-ahead", False, (
            f"the output at {v.bar_time} ({v.column}) is {_plain(v.full)!r} on the whole series but "
            f"{_plain(v.truncated)!r} when the series ends at {bars.index[v.cut - 1]}: the ghost reads bars after "
            f"the one it drafts for ({len(found)} of the cuts differ)")))
        return report
    checks.append(Check("look-ahead", True, f"identical output on {n_cuts}+ truncated series"))

    # Live = backtest: the trailing window the desk hands the ghost on each bar.
    span = pd.Timedelta(minutes=warm - 1)
    eligible = np.flatnonzero(bars.index >= bars.index[0] + span) if len(bars) else np.array([], dtype=int)
    after_warmup = set(eligible.tolist())
    signals = [int(i) for i in np.flatnonzero(side != 0) if i in after_warmup][:live_samples]
    rng = np.random.default_rng(seed)
    others = rng.choice(eligible, size=min(live_samples, len(eligible)), replace=False) if len(eligible) else []
    # and the bars within a warm-up after each feed gap: where counting rows instead of minutes shows
    after_gaps: set[int] = set()
    if len(bars) > 1:
        for g in np.flatnonzero(np.diff(bars.index.as_unit("ns").asi8) > 60_000_000_000)[:20] + 1:
            end = bars.index[g] + span
            near = np.arange(g, min(g + warm, len(bars)))
            near = near[(bars.index[near] <= end) & np.isin(near, eligible)]
            # the first bars after the gap and those that draft (where a row-count rule differs), a few per gap
            after_gaps.update(near[:5].tolist())
            after_gaps.update(near[side[near] != 0][:live_samples // 4].tolist())
    rows = sorted(set(signals) | {int(i) for i in others} | after_gaps)
    times: list[float] = []
    for i in rows:
        t = bars.index[i]
        window = bars.loc[t - span: t]
        t0 = time.perf_counter()
        part, failed, detail = _run(spec, window, cfg)
        times.append(time.perf_counter() - t0)
        if part is None:
            checks.append(Check("live = backtest", False, f"on the live window ending at {t}: {failed}: {detail}"))
            return report
        want = None if side[i] == 0 else Draft.from_row(t, full.iloc[i])
        got = None if int(part["side"].iloc[-1]) == 0 else Draft.from_row(t, part.iloc[-1])
        if not _same_draft(got, want):
            checks.append(Check("live = backtest", False, (
                f"at {t} the live window of {warm} minutes drafts {_draft_text(got)} but the whole series "
                f"{_draft_text(want)}: the warm-up is too short, or the output depends on where the series "
                "starts (an exponential average, a running sum from the first bar)")))
            return report
    report.window_ms = float(np.median(times) * 1000) if times else None
    checks.append(Check("live = backtest", True, f"{len(rows)} bars ({len(signals)} with a draft) equal from a "
                                                 f"{warm}-minute window and from the whole series"))
    return report


def _same_draft(a: Draft | None, b: Draft | None) -> bool:
    """Equal drafts, NaN equal to NaN (max_hold_s may be NaN: no time stop); Draft's own == says NaN != NaN."""
    if a is None or b is None:
        return a is b
    for f in dataclasses.fields(Draft):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x != y and not (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y)):
            return False
    return True


def _draft_text(d: Draft | None) -> str:
    if d is None:
        return "nothing"
    return (f"{'LONG' if d.side > 0 else 'SHORT'} entry {d.entry:g} stop {d.stop:g} target {d.target:g} "
            f"conf {d.confidence:g} ({d.reason!r})")


def load_time_bars(spec: GhostSpec) -> pd.DataFrame:
    """The synthetic series the desk checks `spec` on at start: 3,000 minutes, or 3x the warm-up (at most
    20,000), so the live-window check has bars past the warm-up to compare."""
    try:
        warm = int(getattr(spec.config_cls(), "warmup_minutes", spec.warmup_minutes))
    except Exception:
        warm = 0
    n = 3000 if not isinstance(warm, int) or warm * 3 <= 3000 else min(warm * 3, 20_000)
    return synthetic_bars(n)

