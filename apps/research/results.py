"""A finished study's results, computed once from its trials (`services._study_finish`) and stored as
Study.results (JSON). Only OUT-OF-SAMPLE figures are headlines; in-sample scores appear beside their twin.

- per fold: the chosen trial = the best TRAIN objective among its done trials (ties: the lowest trial number),
  its train (IS) and test (OOS) WindowScores, and the degradation = OOS - IS objective (net P&L: per day of
  each window, the windows being of different lengths);
- the stitched out-of-sample equity: each fold's chosen trial's daily returns over THAT fold's test window,
  the windows end to end in time (R1's folds never overlap: step >= test), compounded from the start capital;
  its figures from `objectives.window_score` over that curve (one formula for every window);
- stability: the chosen value of each parameter per fold and its spread (apps.research.charts.stability_rows);
- importance: optuna's (PED-ANOVA, its default) over each fold's trials with a defined train value;
- overfitting: the deflated Sharpe ratio of the stitched out-of-sample Sharpe for the number of trials run
  (every done trial's Sharpe over the same out-of-sample days gives the variance across trials), and per
  fold of the chosen trial's in-sample Sharpe among that fold's trials; the probability of backtest
  overfitting by CSCV over every done trial's daily returns across the whole range. A param set run twice
  (samplers repeat points; folds ask the same ones) is one configuration: counted once by both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd

from apps.engine.objectives import OBJECTIVE_FORMULAS, window_score
from apps.engine.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting, sharpe_moments
from apps.engine.report import FORMULAS, num
from apps.research.models import Study, Trial
from apps.research.space import study_distributions as _distributions
from apps.research.space import study_ranges as _ranges

PBO_MAX_SPLITS = 16  # CSCV blocks (C(16, 8) = 12,870 splits, the paper's choice); fewer when the range is short
PBO_MIN_SPLITS = 4


def _sr(r: np.ndarray) -> float:
    """Per-day Sharpe (mean / std, ddof=1, NOT annualised: the deflated Sharpe ratio works per observation)."""
    return sharpe_moments(r)[0]


def _dsr(returns: np.ndarray, trials_sr: Sequence[float]) -> dict[str, Any]:
    """The deflated Sharpe ratio of `returns` (the selected series) among `trials_sr`, as JSON."""
    sr, skew, kurt, n_obs = sharpe_moments(returns)
    return deflated_sharpe_ratio(sr, trials_sr, n_obs=n_obs, skew=skew, kurtosis=kurt).as_dict()


def _pbo(matrix: np.ndarray) -> dict[str, Any]:
    """CSCV over the days where every done trial has a return; S = 16 blocks, fewer (even, >= 4) on a short
    range so each block keeps 2 days or more. The logits are summarised as a histogram (12,870 of them)."""
    full = matrix[np.all(np.isfinite(matrix), axis=1)] if matrix.size else matrix
    n_splits = max(PBO_MIN_SPLITS, min(PBO_MAX_SPLITS, (full.shape[0] // 2) // 2 * 2))
    res = probability_of_backtest_overfitting(full, n_splits=n_splits)
    d = res.as_dict()
    logits = np.asarray([x for x in d.pop("logits") if x is not None], dtype=np.float64)
    if len(logits):
        counts, edges = np.histogram(np.clip(logits, -6, 6), bins=24, range=(-6, 6))
        d["logit_hist"] = {"edges": edges.tolist(), "counts": counts.tolist()}
        d["logit_median"] = float(np.median(logits))
    return d


def _importance(s: Mapping[str, Any], trials: Sequence[Trial]) -> tuple[dict[str, float] | None, str]:
    """optuna's parameter importances (fractions summing to 1) over the trials with a defined train value."""
    scored = [t for t in trials if t.status == Trial.Status.DONE and t.value is not None]
    ranges = _ranges(s)
    if len(ranges) < 2:
        return ({ranges[0].name: 1.0} if ranges and scored else None), \
            ("" if scored else "no trial with a defined train value")
    if len(scored) < 4:
        return None, f"{len(scored)} trial(s) with a defined train value; importance needs at least 4"
    if len({t.value for t in scored}) < 2:
        return None, "every trial scored the same: no parameter made a difference"
    study = optuna.create_study(direction="maximize")
    for t in scored:
        study.add_trial(optuna.trial.create_trial(params=t.params, distributions=_distributions(tuple(ranges)),
                                                  value=t.value))
    try:
        imp = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as e:
        return None, f"optuna could not rank the parameters: {e}"
    return {k: float(v) for k, v in imp.items()}, ""


def _degradation(objective: str, is_v: float | None, oos_v: float | None, train_days: int,
                 test_days: int) -> float | None:
    if is_v is None or oos_v is None:
        return None
    if objective == "net_pnl":  # windows of different lengths: compare P&L per day
        return oos_v / max(test_days, 1) - is_v / max(train_days, 1)
    return oos_v - is_v


def _oos_figures(days: list[str], returns: list[float], capital: float, trades: int, objective: str
                 ) -> list[dict[str, Any]]:
    """The stitched curve's figures through `objectives.window_score` (the windows' own formulas): points at
    the first tested day's midnight then each tested day's end, compounded from the capital."""
    if not days:
        return []
    t = pd.DatetimeIndex(pd.to_datetime(days, utc=True))
    levels = capital * np.concatenate(([1.0], np.cumprod(1.0 + np.asarray(returns, dtype=np.float64))))
    # a point at the first tested day's start, then at each tested day's end: days between test windows
    # (step > test) are not in the curve
    eq = pd.Series(levels, index=pd.DatetimeIndex([t[0], *(t + pd.Timedelta(days=1))]))
    ws = window_score(eq, [], eq.index[0], eq.index[-1], objective=objective, min_trades=0)
    n = len(returns)
    figs = [
        ("net_pnl", "Net P&L (out-of-sample)", ws.net_pnl, "quote",
         "net P&L = stitched out-of-sample equity at the end − start capital"),
        ("return_pct", "Return (out-of-sample)", ws.return_pct, "%", FORMULAS["return_pct"]),
        ("sharpe", "Sharpe (daily, ×√365)", ws.sharpe, "", OBJECTIVE_FORMULAS["sharpe"]),
        ("sortino", "Sortino (daily, ×√365)", ws.sortino, "", OBJECTIVE_FORMULAS["sortino"]),
        ("max_drawdown", "Max drawdown (daily)", ws.max_drawdown_pct, "%",
         "max drawdown of the stitched equity at each tested day's end"),
        ("calmar", "Calmar", ws.calmar, "", OBJECTIVE_FORMULAS["calmar"]),
        ("trades", "Trades (test windows)", trades, "", "trades closed inside the test windows by each fold's "
                                                         "chosen params"),
        ("days", "Out-of-sample days", n, "", "days in the test windows, stitched"),
    ]
    return [{"key": k, "label": label, "value": num(v) if isinstance(v, float) else v, "unit": unit,
             "formula": formula, "sample": f"{n} out-of-sample days"} for k, label, v, unit, formula in figs]


def study_results(study: Study) -> dict[str, Any]:
    """The results JSON of a study whose trials are all finished (module docstring)."""
    from apps.research.charts import stability_rows
    s = study.settings
    objective = s["objective"]
    capital = float(s["start_capital"])
    days = list(study.days)
    day_pos = {d: i for i, d in enumerate(days)}
    trials = list(Trial.objects.filter(study=study).defer(None).order_by("fold", "number"))
    by_fold: dict[int, list[Trial]] = {f["index"]: [] for f in study.folds}
    for t in trials:
        by_fold[t.fold].append(t)
    done = [t for t in trials if t.status == Trial.Status.DONE and t.daily is not None]
    matrix = np.array([[np.nan if x is None else x for x in t.daily] for t in done], dtype=np.float64).T \
        if done else np.empty((len(days), 0))  # T days x N trials
    # a param set asked twice (within a fold, or by two folds) ran the same run: one configuration, counted once
    # by the DSR's N and the PBO's columns
    first_of: dict[str, int] = {}
    for j, t in enumerate(done):
        first_of.setdefault(json.dumps(t.params, sort_keys=True), j)
    distinct = sorted(first_of.values())

    folds_out: list[dict[str, Any]] = []
    oos_days: list[str] = []
    oos_ret: list[float] = []
    oos_fold: list[int] = []
    oos_trades = 0
    chosen_params: list[dict[str, Any] | None] = []
    notes: list[str] = []
    for f in study.folds:
        k = f["index"]
        rows = by_fold[k]
        counts = {st: sum(1 for t in rows if t.status == st) for st in Trial.Status.values}
        scored = [t for t in rows if t.status == Trial.Status.DONE and t.value is not None]
        undefined = counts["done"] - len(scored)
        test_days = [d.strftime("%Y-%m-%d") for d in pd.date_range(f["test_start"], f["test_end"], freq="D",
                                                                    inclusive="left")]
        train_days = [d.strftime("%Y-%m-%d") for d in pd.date_range(f["train_start"], f["train_end"], freq="D",
                                                                     inclusive="left")]
        entry: dict[str, Any] = {**f, "trials": len(rows), "done": counts["done"], "infeasible": counts["infeasible"],
                                 "failed": counts["failed"], "undefined": undefined, "trial_id": None,
                                 "number": None, "params": None, "train": None, "test": None, "is_value": None,
                                 "oos_value": None, "degradation": None, "dsr": None, "reason": ""}
        imp, why = _importance(s, rows)
        entry["importance"], entry["importance_why"] = imp, why
        if not scored:
            entry["reason"] = (f"no trial had a defined train {objective} (of {len(rows)}: {undefined} undefined or "
                               f"under min_trades, {counts['infeasible']} infeasible, {counts['failed']} failed)")
            notes.append(f"fold {k + 1}: nothing chosen, its test days are flat in the stitched equity")
            chosen_params.append(None)
            ret = [0.0] * len(test_days)
        else:
            best = max(scored, key=lambda t: (t.value, -t.number))
            test_v = (best.test or {}).get("value")
            entry.update(trial_id=best.pk, number=best.number, params=best.params, train=best.train, test=best.test,
                         is_value=best.value, oos_value=test_v,
                         degradation=num(_degradation(objective, best.value, test_v, len(train_days), len(test_days))))
            chosen_params.append(best.params)
            oos_trades += int((best.test or {}).get("trades") or 0)
            ret = [0.0 if (x := best.daily[day_pos[d]]) is None else float(x) for d in test_days] \
                if best.daily is not None else [0.0] * len(test_days)
            # in-sample DSR: the chosen trial's train days among this fold's trials' train days
            rows_idx = [day_pos[d] for d in train_days if d in day_pos]
            cols = sorted({json.dumps(t.params, sort_keys=True): j for j, t in reversed(list(enumerate(done)))
                           if t.fold == k}.values())
            chosen_col = np.asarray([np.nan if best.daily[i] is None else best.daily[i] for i in rows_idx])
            entry["dsr"] = _dsr(chosen_col, [_sr(matrix[rows_idx, j]) for j in cols])
        oos_days += test_days
        oos_ret += ret
        oos_fold += [k] * len(test_days)
        folds_out.append(entry)

    oos_rows = [day_pos[d] for d in oos_days if d in day_pos]
    r = np.asarray(oos_ret, dtype=np.float64)
    # out-of-sample DSR: the stitched series against every done trial's Sharpe over the same days
    headline_dsr = _dsr(r, [_sr(matrix[oos_rows, j]) for j in distinct])
    pbo = _pbo(matrix[:, distinct])

    counts_all = {st: sum(1 for t in trials if t.status == st) for st in Trial.Status.values}
    return {
        "objective": objective, "formula": OBJECTIVE_FORMULAS[objective], "min_trades": s["min_trades"],
        "trials": {"total": len(trials), **counts_all,
                   "undefined": sum(1 for t in trials if t.status == Trial.Status.DONE and t.value is None)},
        "folds": folds_out,
        "oos": {"days": oos_days, "returns": [num(x) for x in oos_ret], "fold": oos_fold, "start_capital": capital,
                "trades": oos_trades, "figures": _oos_figures(oos_days, oos_ret, capital, oos_trades, objective)},
        "stability": stability_rows(chosen_params, [{**r.as_dict()} for r in _ranges(s)]),
        "dsr": headline_dsr,
        "pbo": pbo,
        "notes": notes,
    }
