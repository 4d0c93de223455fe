"""One trial of a parameter study (issue 10): a parameter set run once through the pure engine, scored per fold.

A trial runs the whole study range ONCE (`backtest.run_backtest`, warm-up before the study's start through
`BacktestConfig.trade_from`) and keeps the run's equity as of each UTC midnight and its closed trades; every
fold's train and test windows are then scored from that one run (`objectives.window_score`). The walk is
causal (every ghost's draft at bar t uses bars up to t; the ledger at t only what happened before), so a
train window's score depends on bars before its end only: no test data reaches training
(tests/engine/test_wf_trial.py perturbs every bar after a train window and gets the same train score, bit
for bit). The path dependency we accept: a window starts with the equity, positions and ghost records the
run carried into it, exactly as the desk would have.

`TrialContext` holds what does not depend on the trial's parameters, computed once per study and worker:
the validated bars (the engine's checks ran once; every later `validate_bars` is the O(columns) fast path),
the trend filter's and the CVD detector's shared states (`batch._Shared`, handed to the gated ghosts as
`evaluate_ghosts` does), and the drafts of every ghost that is NOT searched. A trial then evaluates only the
searched ghost(s) and walks. Results equal a plain `run_backtest` over the same bars and params exactly
(`cache=False` runs exactly that; the tests compare both). The trend GATE of the walk is the trend filter's
state too: it is handed to `run_backtest(gate_state=...)` from the same cache (~12 ms over 90 days saved per
trial), and recomputed only when the trend filter itself is searched.

Infeasible parameters (the config's own validation refuses them, e.g. take_profit_pct >= spike_threshold_pct)
give `TrialRun.infeasible` with the ConfigError text, at no walking cost.
"""

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from apps.engine.backtest import TREND_KIND, BacktestConfig, BacktestResult, GhostSetup, run_backtest
from apps.engine.bars import validate_bars
from apps.engine.batch import _ORDER, _ghost_fn, _Shared
from apps.engine.objectives import OBJECTIVES, WindowScore, daily_equity, window_score
from apps.engine.registry import get_spec
from apps.engine.types import ConfigError, GhostConfig
from apps.engine.walkforward import Fold


@dataclasses.dataclass(frozen=True)
class ClosedTrade:
    """What a window score needs of a trade: its ghost, when it closed (exit bar open time) and its net P&L."""

    ghost_id: int
    exit_time: pd.Timestamp
    net_pnl: float


def _params_of(config: GhostConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, GhostConfig):
        return config.to_params()
    return dict(config)


class TrialContext:
    """The study's fixed inputs and the caches of everything the searched parameters do not change.

    bars: the loaded bars (warm-up included); ghosts: the study's ghost set, each with its FIXED config (the
    searched ghosts' trial parameters override theirs); cfg: the run's BacktestConfig (trade_from = the
    study's start); searched: the ghost id(s) whose parameters the study varies. cache=False keeps no cache
    (each trial is a plain run_backtest of the raw bars), for comparisons and measurements.
    """

    def __init__(self, bars: pd.DataFrame, ghosts: Sequence[GhostSetup], cfg: BacktestConfig | None = None, *,
                 searched: int | Sequence[int], cache: bool = True) -> None:
        self.ghosts = tuple(ghosts)
        ids = [g.ghost_id for g in self.ghosts]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"ghost ids must be unique, got {ids}")
        wanted = (searched,) if isinstance(searched, int) else tuple(searched)
        by_id = {g.ghost_id: g for g in self.ghosts}
        missing = [i for i in wanted if i not in by_id]
        if not wanted or missing:
            raise ConfigError(f"searched ghost id(s) {missing or list(wanted)} not in the ghost set {ids}")
        self.searched: tuple[GhostSetup, ...] = tuple(by_id[i] for i in wanted)
        kinds = [g.kind for g in self.searched]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"searched ghosts must be of different kinds (parameters are named <kind>.<field>), "
                              f"got {kinds}")
        self.cfg = cfg if cfg is not None else BacktestConfig()
        self.cache = cache
        self.fixed = {g.ghost_id: _params_of(g.config) for g in self.searched}
        for g in self.ghosts:  # a fixed config that does not validate is a settings error, not a trial's
            g.resolved_config()
        self.raw_bars = bars
        self.bars = bars
        self._drafts: dict[int, pd.DataFrame] = {}
        self._shared: _Shared | None = None
        if cache:
            self.bars = validate_bars(bars)
            self._shared = _Shared(self.bars)
            searched_ids = {g.ghost_id for g in self.searched}
            others = [g for g in self.ghosts if g.ghost_id not in searched_ids]
            # the trend filter and the CVD detector first (evaluate_ghosts' order), so gated ghosts reuse them
            for g in sorted(others, key=lambda s: _ORDER.get(s.kind, 2)):
                self._drafts[g.ghost_id] = _ghost_fn(g.kind, self._shared)(validate_bars(self.bars),
                                                                           g.resolved_config())

    def split(self, params: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
        """Trial params by searched ghost id; ConfigError for a name that is no searched ghost's field."""
        out: dict[int, dict[str, Any]] = {g.ghost_id: {} for g in self.searched}
        by_kind = {g.kind: g for g in self.searched}
        for name, value in params.items():
            if "." in name:
                kind, field = name.split(".", 1)
                g = by_kind.get(kind)
                if g is None:
                    raise ConfigError(f"parameter {name!r}: no searched ghost of kind {kind!r} "
                                      f"(searched: {', '.join(by_kind)})")
            elif len(self.searched) == 1:
                g, field = self.searched[0], name
            else:
                raise ConfigError(f"parameter {name!r}: name it <kind>.<field> when several ghosts are searched")
            fields = {f.name for f in dataclasses.fields(get_spec(g.kind).config_cls)}  # type: ignore[arg-type]
            if field not in fields:
                raise ConfigError(f"parameter {name!r}: {g.kind} has no field {field!r}; allowed: "
                                  f"{', '.join(sorted(fields))}")
            out[g.ghost_id][field] = value
        return out

    def drafts_for(self, configs: Mapping[int, GhostConfig]) -> dict[int, pd.DataFrame]:
        """Every ghost's drafts with the searched ghosts at `configs` (cached path only)."""
        return self.inputs_for(configs)[0]

    def inputs_for(self, configs: Mapping[int, GhostConfig]) -> tuple[dict[int, pd.DataFrame], pd.DataFrame | None]:
        """Every ghost's drafts with the searched ghosts at `configs`, and the walk's trend gate state (None
        without a trend filter in the set), both from the caches (cached path only)."""
        assert self._shared is not None
        # a per-trial view of the shared states: the context's trend / CVD states are reused, and a searched
        # trend or CVD config's state is memoised only for this trial (never kept: one per trial would pile up)
        shared = _Shared(self.bars)
        shared.trend = dict(self._shared.trend)
        shared.cvd = dict(self._shared.cvd)
        drafts = dict(self._drafts)
        for g in sorted(self.searched, key=lambda s: _ORDER.get(s.kind, 2)):
            drafts[g.ghost_id] = _ghost_fn(g.kind, shared)(validate_bars(self.bars), configs[g.ghost_id])
        gate = None
        trend = next((g for g in self.ghosts if g.kind == TREND_KIND), None)
        if trend is not None and len(self.bars):
            cfg = configs.get(trend.ghost_id) or trend.resolved_config()
            gate = shared.trend_state(cfg).frame  # memoised: the trend ghost's own drafts computed it already
        return {g.ghost_id: drafts[g.ghost_id] for g in self.ghosts}, gate


@dataclasses.dataclass(frozen=True)
class TrialRun:
    """One trial's run: its params, the full configs of the searched ghosts (validated params by ghost id), or
    `infeasible` (the ConfigError text, nothing run); the equity as of each UTC midnight
    (`objectives.daily_equity`), the closed trades, the final equity and how long the trial took."""

    params: dict[str, Any]
    configs: dict[int, dict[str, Any]]
    infeasible: str | None
    daily_equity: pd.Series
    trades: tuple[ClosedTrade, ...]
    start_capital: float
    final_equity: float
    elapsed_s: float
    result: BacktestResult | None = None  # the whole BacktestResult, only when run_trial(keep_result=True)

    @property
    def n_trades(self) -> int:
        return len(self.trades)

    def daily_returns(self) -> pd.Series:
        """Simple returns per UTC day (indexed by the day's midnight): the equity change from the day's first
        point (its midnight, or the trading start) to its next point (the next midnight, or the last close)."""
        e = self.daily_equity
        if len(e) < 2:
            return pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=np.float64, name="return")
        v = e.to_numpy(np.float64)
        return pd.Series(v[1:] / v[:-1] - 1.0, index=pd.DatetimeIndex(e.index[:-1]).floor("D"), name="return")

    def score(self, start: Any, end: Any, *, objective: str, min_trades: int) -> WindowScore:
        """The window [start, end)'s score (objectives.window_score); for an infeasible trial, value None with
        the reason 'infeasible: <why>'."""
        if self.infeasible is not None:
            if objective not in OBJECTIVES:
                raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
            return WindowScore(objective=objective, value=None, trades=0, net_pnl=None, sharpe=None, sortino=None,
                               profit_factor=None, max_drawdown_pct=None, calmar=None,
                               reason=f"infeasible: {self.infeasible}")
        return window_score(self.daily_equity, self.trades, start, end, objective=objective, min_trades=min_trades)

    def scores(self, folds: Sequence[Fold], objective: str, min_trades: int) -> list[tuple[WindowScore, WindowScore]]:
        """(train score, test score) per fold, in the folds' order."""
        return [(self.score(f.train_start, f.train_end, objective=objective, min_trades=min_trades),
                 self.score(f.test_start, f.test_end, objective=objective, min_trades=min_trades)) for f in folds]


_EMPTY = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=np.float64, name="equity")


def run_trial(ctx: TrialContext, params: Mapping[str, Any], *, keep_result: bool = False) -> TrialRun:
    """Run one parameter set (names as in the study's search space) over the context's bars."""
    t0 = time.perf_counter()
    params = dict(params)
    split = ctx.split(params)
    capital = float(ctx.cfg.start_capital)
    configs: dict[int, GhostConfig] = {}
    try:
        for g in ctx.searched:
            configs[g.ghost_id] = get_spec(g.kind).config_cls.from_params({**ctx.fixed[g.ghost_id],
                                                                           **split[g.ghost_id]})
    except ConfigError as exc:
        return TrialRun(params=params, configs={}, infeasible=str(exc), daily_equity=_EMPTY, trades=(),
                        start_capital=capital, final_equity=math.nan, elapsed_s=time.perf_counter() - t0)
    ghosts = [dataclasses.replace(g, config=configs[g.ghost_id]) if g.ghost_id in configs else g
              for g in ctx.ghosts]
    if ctx.cache:
        drafts, gate = ctx.inputs_for(configs)
        result = run_backtest(ctx.bars, ghosts, ctx.cfg, drafts=drafts, gate_state=gate)
    else:
        result = run_backtest(ctx.raw_bars, ghosts, ctx.cfg)
    trades = tuple(ClosedTrade(ghost_id=t.ghost_id, exit_time=t.exit_time, net_pnl=float(t.net_pnl))
                   for t in result.trades)
    return TrialRun(params=params, configs={gid: c.to_params() for gid, c in configs.items()}, infeasible=None,
                    daily_equity=daily_equity(result.equity, capital), trades=trades, start_capital=capital,
                    final_equity=float(result.final_equity), elapsed_s=time.perf_counter() - t0,
                    result=result if keep_result else None)
