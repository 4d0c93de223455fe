"""Trials (apps.engine.trial) on the real 90-day BTC/USDT file: a trial IS a plain run_backtest, the caches
change nothing, no bar after a train window reaches its score, infeasible params cost nothing and say why."""

import dataclasses

import numpy as np
import optuna
import pandas as pd
import pytest

from apps.engine.backtest import BacktestConfig, GhostSetup, run_backtest
from apps.engine.objectives import daily_equity
from apps.engine.report import report_build
from apps.engine.search_space import default_space, suggest, validate_space
from apps.engine.trial import ClosedTrade, TrialContext, TrialRun, run_trial
from apps.engine.types import ConfigError
from apps.engine.walkforward import make_folds
from tests.datafiles import BTC_90D, _flush_redis, load_freqtrade_1m, require, services_use_test_redis  # noqa: F401

optuna.logging.set_verbosity(optuna.logging.WARNING)
# a looser fader than the defaults, so every 10-day window trades
LOOSE = {"spike_threshold_pct": 0.8, "take_profit_pct": 0.5, "min_volume_ratio": 1.2}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    require(BTC_90D)
    return load_freqtrade_1m()


def study_cfg(bars: pd.DataFrame, desk_switches: bool = False) -> BacktestConfig:
    """The study starts a day in: the first day is the ghosts' warm-up (trade_from), as the lab runs do. The lab
    switches auto_disable and kill_switch are off unless asked: with them on, a losing parameter set is switched
    off for good within days, and every later window scores "no trades"."""
    return BacktestConfig(trade_from=bars.index[0].floor("D") + pd.Timedelta(days=1), auto_disable=desk_switches,
                          kill_switch=desk_switches)


def fader_alone() -> list[GhostSetup]:
    return [GhostSetup(ghost_id=1, name="fader", kind="spike_fader", config={"min_volume_ratio": 1.2})]


def desk_set() -> list[GhostSetup]:
    # the fader behind the trend gate, with the CVD detector (idle on OHLCV-only bars, but evaluated)
    return [GhostSetup(ghost_id=1, name="fader", kind="spike_fader", config={"min_volume_ratio": 1.2}),
            GhostSetup(ghost_id=2, name="trend", kind="trend_filter"),
            GhostSetup(ghost_id=3, name="cvd", kind="cvd_detector")]


def same(a: TrialRun, b: TrialRun) -> None:
    """Two trial runs are the same run (timing aside)."""
    assert a.params == b.params and a.configs == b.configs and a.infeasible == b.infeasible
    assert a.trades == b.trades and a.final_equity == b.final_equity or (a.infeasible and b.infeasible)
    pd.testing.assert_series_equal(a.daily_equity, b.daily_equity, check_exact=True)


@pytest.mark.parametrize(("ghosts", "desk_switches"), [(fader_alone, False), (desk_set, False), (desk_set, True)],
                         ids=["fader", "fader+trend+cvd", "desk switches on"])
def test_a_trial_is_a_plain_run_backtest_of_its_params(bars: pd.DataFrame, ghosts, desk_switches: bool) -> None:
    setups = ghosts()
    cfg = study_cfg(bars, desk_switches)
    params = {"spike_threshold_pct": 0.9, "take_profit_pct": 0.5, "window_minutes": 12}
    run = run_trial(TrialContext(bars, setups, cfg, searched=1), params)
    plain_setups = [dataclasses.replace(setups[0], config={**setups[0].config, **params}), *setups[1:]]
    plain = run_backtest(bars, plain_setups, cfg)
    assert run.infeasible is None and run.n_trades >= 10
    assert run.trades == tuple(ClosedTrade(t.ghost_id, t.exit_time, float(t.net_pnl)) for t in plain.trades)
    assert run.final_equity == float(plain.final_equity)
    assert run.configs == {1: {**setups[0].resolved_config().to_params(), **params}}
    pd.testing.assert_series_equal(run.daily_equity, daily_equity(plain.equity, float(cfg.start_capital)),
                                   check_exact=True)
    # the whole range scored as one window gives the lab's own figures for the run
    whole = run.score(cfg.trade_from, bars.index[-1] + pd.Timedelta(minutes=1), objective="sharpe", min_trades=0)
    lab = report_build(plain)
    assert whole.sharpe == pytest.approx(lab.figure("sharpe"), rel=1e-12)
    assert whole.sortino == pytest.approx(lab.figure("sortino"), rel=1e-12)
    assert whole.net_pnl == pytest.approx(lab.figure("net_pnl"), abs=1e-6)
    assert whole.trades == len(plain.trades)
    assert whole.profit_factor == pytest.approx(lab.figure("profit_factor"), rel=1e-12)
    # the daily returns compound to the run's return, one per UTC day from the study's start
    r = run.daily_returns()
    assert r.index[0] == cfg.trade_from and (r.index == r.index.floor("D")).all() and r.index.is_unique
    assert float(np.prod(1 + r.to_numpy())) == pytest.approx(run.final_equity / run.start_capital, rel=1e-12)


def _param_sets(n: int, seed: int) -> list[dict]:
    # the default space with a threshold and volume ratio low enough to trade often on these 90 days, and
    # targets mostly below the threshold (take_profit_pct >= spike_threshold_pct is infeasible)
    narrow = {"spike_threshold_pct": (0.7, 1.4), "min_volume_ratio": (0.8, 1.6), "take_profit_pct": (0.3, 0.8),
              "min_target_pct": (0.1, 0.25)}
    space = validate_space("spike_fader", [
        *({"name": k, "low": lo, "high": hi} for k, (lo, hi) in narrow.items()),
        *(r.as_dict() for r in default_space("spike_fader") if r.name not in narrow)])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append(suggest(t, space))
        study.tell(t, 0.0)
    return out


@pytest.mark.parametrize("ghosts", [fader_alone, desk_set], ids=["fader", "fader+trend+cvd"])
def test_the_caches_give_the_same_runs_as_no_cache(bars: pd.DataFrame, ghosts) -> None:
    cfg = study_cfg(bars)
    cached = TrialContext(bars, ghosts(), cfg, searched=1)
    plain = TrialContext(bars, ghosts(), cfg, searched=1, cache=False)
    sets = _param_sets(10, seed=11)
    sets.insert(3, {"spike_threshold_pct": 0.8, "take_profit_pct": 0.9})  # infeasible, between feasible ones
    first = [run_trial(cached, p) for p in sets]
    for p, a in zip(reversed(sets), reversed(first), strict=True):  # another order: no state leaks between trials
        same(a, run_trial(plain, p))
        same(a, run_trial(cached, p))
    assert first[3].infeasible and sum(r.n_trades > 0 for r in first) >= 6  # the comparisons bite
    assert len({r.trades for r in first}) >= 5


def test_searching_the_trend_filter_itself_matches_no_cache(bars: pd.DataFrame) -> None:
    # the gate changes with the trial: nothing about it may come from the context
    cfg = study_cfg(bars)
    setups = [GhostSetup(ghost_id=1, name="fader", kind="spike_fader", config=LOOSE),
              GhostSetup(ghost_id=2, name="trend", kind="trend_filter")]
    cached = TrialContext(bars, setups, cfg, searched=2)
    plain = TrialContext(bars, setups, cfg, searched=2, cache=False)
    runs = []
    for p in ({"fast_periods": 20, "weak_score": 0.15}, {}, {"fast_periods": 80, "strong_z": 1.2}):
        a = run_trial(cached, p)
        same(a, run_trial(plain, p))
        runs.append(a)
    assert runs[0].trades != runs[1].trades  # the trend params matter to the fader's trades
    assert cached._shared is not None and len(cached._shared.trend) <= 1  # trial states are not kept


def _perturbed_after(bars: pd.DataFrame, cut: pd.Timestamp, seed: int) -> pd.DataFrame:
    """The same bars before `cut`; from `cut` on every price scaled by its own random-walk factor (OHLC stay
    consistent: one factor per bar)."""
    out = bars.copy()
    after = out.index >= cut
    rng = np.random.default_rng(seed)
    factor = np.exp(np.cumsum(rng.normal(0.0, 0.004, int(after.sum()))))
    for c in ("open", "high", "low", "close"):
        out.loc[after, c] = out.loc[after, c].to_numpy() * factor
    return out


@pytest.mark.parametrize("ghosts", [fader_alone, desk_set], ids=["fader", "fader+trend+cvd"])
def test_no_bar_after_a_train_window_reaches_its_score(bars: pd.DataFrame, ghosts) -> None:
    cfg = study_cfg(bars)
    folds = make_folds(cfg.trade_from, bars.index[-1], scheme="rolling", train_days=20, test_days=10)
    params = {"spike_threshold_pct": 0.8, "take_profit_pct": 0.5}
    base = run_trial(TrialContext(bars, ghosts(), cfg, searched=1), params)
    base_scores = base.scores(folds, "sharpe", 0)
    for k in (0, 2):
        cut = folds[k].train_end
        changed = run_trial(TrialContext(_perturbed_after(bars, cut, seed=k), ghosts(), cfg, searched=1), params)
        scores = changed.scores(folds, "sharpe", 0)
        for j, f in enumerate(folds):
            if f.train_end <= cut:  # every train window that ends by the cut: the same score, bit for bit
                assert scores[j][0] == base_scores[j][0]
                assert base_scores[j][0].trades > 0 and base_scores[j][0].value is not None
        # the perturbation bites: the test window that follows the cut scores differently
        assert scores[k][1] != base_scores[k][1]
        assert [t for t in changed.trades if t.exit_time < cut] == [t for t in base.trades if t.exit_time < cut]
        pd.testing.assert_series_equal(changed.daily_equity[changed.daily_equity.index <= cut],
                                       base.daily_equity[base.daily_equity.index <= cut], check_exact=True)


def test_infeasible_params_cost_no_walk_and_say_why(bars: pd.DataFrame) -> None:
    cfg = study_cfg(bars)
    ctx = TrialContext(bars, fader_alone(), cfg, searched=1)
    run = run_trial(ctx, {"spike_threshold_pct": 0.8, "take_profit_pct": 0.9})
    why = ("spike_fader.take_profit_pct (0.9 %) must be below spike_threshold_pct (0.8 %): a fade cannot expect "
           "more than the spike it fades")
    assert run.infeasible == why and run.n_trades == 0 and len(run.daily_equity) == 0 and run.configs == {}
    folds = make_folds(cfg.trade_from, bars.index[-1], scheme="anchored", train_days=30, test_days=30)
    for train, test in run.scores(folds, "net_pnl", 1):
        assert train.value is None and test.value is None and train.reason == test.reason == f"infeasible: {why}"
    assert run.daily_returns().empty
    with pytest.raises(ConfigError, match="objective must be one of"):
        run.score(folds[0].train_start, folds[0].train_end, objective="sharp", min_trades=0)


def test_param_names_must_name_a_searched_field(bars: pd.DataFrame) -> None:
    cfg = study_cfg(bars)
    one = TrialContext(bars.iloc[:3000], fader_alone(), cfg, searched=1)
    with pytest.raises(ConfigError, match="parameter 'spike_treshold_pct': spike_fader has no field"):
        run_trial(one, {"spike_treshold_pct": 1.0})
    with pytest.raises(ConfigError, match="parameter 'trend_filter.fast_periods': no searched ghost of kind"):
        run_trial(one, {"trend_filter.fast_periods": 10})
    assert run_trial(one, {"spike_fader.spike_threshold_pct": 1.0}).configs[1]["spike_threshold_pct"] == 1.0
    two = TrialContext(bars.iloc[:3000], desk_set(), cfg, searched=[1, 2])
    with pytest.raises(ConfigError, match="name it <kind>.<field> when several ghosts are searched"):
        run_trial(two, {"spike_threshold_pct": 1.0})
    run = run_trial(two, {"spike_fader.spike_threshold_pct": 1.0, "trend_filter.fast_periods": 10})
    assert run.configs[1]["spike_threshold_pct"] == 1.0 and run.configs[2]["fast_periods"] == 10
    with pytest.raises(ConfigError, match=r"searched ghost id\(s\) \[9\] not in the ghost set"):
        TrialContext(bars.iloc[:3000], desk_set(), cfg, searched=9)
    with pytest.raises(ConfigError, match="spike_fader.window_minutes must be"):  # a bad FIXED config: settings error
        TrialContext(bars.iloc[:3000], [GhostSetup(1, "f", "spike_fader", config={"window_minutes": 0})], cfg,
                     searched=1)
