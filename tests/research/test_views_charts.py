"""The study page's chart builders (apps.research.charts), on hand-worked cases: the stitched out-of-sample
equity compounds each fold's own test days only, importance averages over folds, parcoords keeps every
scored trial (or a capped sample that keeps each fold's best), stability measures the spread of the chosen
values against the searched range."""

import math

import numpy as np
import pytest

from apps.research.charts import OosSegment, importance_bars, parcoords, stability_rows, stitched_equity

DAY = 86_400_000
T0 = 1_750_000_000_000 // DAY * DAY  # a UTC midnight


def _days(first: int, n: int) -> list[int]:
    return [T0 + (first + i) * DAY for i in range(n)]


def test_stitched_equity_compounds_each_folds_own_test_days():
    # a trial's daily returns cover the whole range; only the days inside its fold's test window count
    whole = list(range(10))
    a = OosSegment(fold=0, start_ms=T0 + 4 * DAY, end_ms=T0 + 6 * DAY, t_ms=_days(0, 10),
                   returns=[0.5 if d not in (4, 5) else r for d, r in zip(whole, [0, 0, 0, 0, 0.10, -0.05, 0, 0, 0, 0],
                                                                           strict=True)])
    b = OosSegment(fold=1, start_ms=T0 + 6 * DAY, end_ms=T0 + 8 * DAY, t_ms=_days(0, 10),
                   returns=[9.0 if d not in (6, 7) else r for d, r in zip(whole, [0, 0, 0, 0, 0, 0, 0.02, 0.0, 0, 0],
                                                                          strict=True)])
    out = stitched_equity([b, a], 1000.0)  # the order given does not matter: time does
    # 1000 -> x1.10 = 1100 -> x0.95 = 1045 -> x1.02 = 1065.9 -> x1.00 = 1065.9
    assert out["equity"] == pytest.approx([1000.0, 1100.0, 1045.0, 1065.9, 1065.9])
    assert out["t"] == [T0 + 4 * DAY, T0 + 5 * DAY, T0 + 6 * DAY, T0 + 7 * DAY, T0 + 8 * DAY]  # each day's close
    assert out["drawdown"] == pytest.approx([0, 0, (1045 / 1100 - 1) * 100, (1065.9 / 1100 - 1) * 100,
                                             (1065.9 / 1100 - 1) * 100])
    assert out["days"] == 4 and out["return_pct"] == pytest.approx(6.59)
    assert [(f["index"], f["start"], f["end"], f["days"]) for f in out["folds"]] == [
        (0, T0 + 4 * DAY, T0 + 6 * DAY, 2), (1, T0 + 6 * DAY, T0 + 8 * DAY, 2)]


def test_overlapping_test_windows_trade_each_day_once_and_nan_is_flat():
    a = OosSegment(0, T0, T0 + 3 * DAY, _days(0, 5), [0.1, 0.1, 0.1, 0.1, 0.1])
    b = OosSegment(1, T0 + 2 * DAY, T0 + 5 * DAY, _days(0, 5), [0.2, 0.2, 0.5, float("nan"), 0.2])
    out = stitched_equity([a, b], 100.0)
    # days 0-2 from fold 1's window (the earliest), days 3-4 from fold 2 (day 2 already taken): NaN -> flat
    assert out["equity"] == pytest.approx([100, 110, 121, 133.1, 133.1, 133.1 * 1.2])
    assert out["flat_days"] == 1 and [f["days"] for f in out["folds"]] == [3, 2]


def test_stitched_equity_is_decimated_with_its_deepest_drawdown_kept():
    rng = np.random.default_rng(7)
    r = rng.normal(0, 0.01, 6000)
    r[3333] = -0.3
    out = stitched_equity([OosSegment(0, T0, T0 + 6000 * DAY, _days(0, 6000), r.tolist())], 1.0, max_points=400)
    eq = np.cumprod(1 + r)
    full_dd = ((eq / np.maximum.accumulate(np.r_[1.0, eq])[1:]) - 1).min() * 100
    assert out["of"] == 6001 and out["points"] <= 402
    assert min(out["drawdown"]) == pytest.approx(full_dd)


def test_empty_study_has_no_points():
    out = stitched_equity([OosSegment(0, T0, T0 + DAY, [], [])], 1000)
    assert out["t"] == [] and out["return_pct"] is None


def test_importance_averages_over_the_folds_that_have_one():
    out = importance_bars([{"a": 0.6, "b": 0.4}, None, {"a": 0.2, "c": 0.8}])
    # a: (0.6 + 0.2) / 2 = 0.4; b: 0.4 / 2 = 0.2; c: 0.8 / 2 = 0.4 -> a and c tie at 0.4 (name order), then b
    assert out == {"param": ["a", "c", "b"], "value": pytest.approx([0.4, 0.4, 0.2]), "folds": 2}
    assert importance_bars([None, {}]) == {"param": [], "value": [], "folds": 0}


SPACE = [{"name": "x", "kind": "float", "low": 0.5, "high": 2.0},
         {"name": "n", "kind": "int", "low": 5, "high": 30, "step": 1},
         {"name": "flag", "kind": "bool"},
         {"name": "mode", "kind": "choice", "choices": ["a", "b", "c"]}]


def test_parcoords_axes_follow_the_searched_ranges_and_skip_unscored_trials():
    trials = [
        {"fold": 0, "number": 0, "params": {"x": 1.0, "n": 10, "flag": True, "mode": "b"}, "value": 1.5, "test": 0.2},
        {"fold": 0, "number": 1, "params": {"x": 1.9, "n": 5, "flag": False, "mode": "c"}, "value": None, "test": None},
        {"fold": 1, "number": 0, "params": {"x": 0.7, "n": 30, "flag": False, "mode": "a"}, "value": -0.5,
         "test": None},
    ]
    out = parcoords(trials, SPACE, objective="sharpe", folds=2)
    dims = {d["label"]: d for d in out["dimensions"]}
    assert list(dims) == ["fold", "x", "n", "flag", "mode", "train sharpe", "test sharpe"]
    assert dims["fold"]["values"] == [0, 1] and dims["fold"]["ticktext"] == ["1", "2"]
    assert dims["x"] == {"label": "x", "values": [1.0, 0.7], "range": [0.5, 2.0]}
    assert dims["flag"]["values"] == [1, 0] and dims["mode"]["values"] == [1, 0]
    assert dims["mode"]["ticktext"] == ["a", "b", "c"]
    assert dims["test sharpe"]["values"] == [0.2, None]
    assert out["color"] == [1.5, -0.5] and (out["cmin"], out["cmax"]) == (-0.5, 1.5)
    assert (out["n"], out["of"], out["left_out"], out["sampled"]) == (2, 3, 1, False)


def test_parcoords_caps_the_lines_and_keeps_each_folds_best():
    trials = [{"fold": f, "number": i, "params": {"x": 1.0}, "value": float((i * 37) % 101), "test": None}
              for f in range(3) for i in range(400)]
    out = parcoords(trials, SPACE[:1], objective="sharpe", folds=3, max_lines=120)
    assert out["n"] == 120 and out["sampled"] and out["of"] == 1200
    folds = out["dimensions"][0]["values"]
    for f in range(3):
        best = max(t["value"] for t in trials if t["fold"] == f)
        mine = [v for v, g in zip(out["color"], folds, strict=True) if g == f]
        assert best in mine
    one = parcoords(trials[:5], SPACE[:1], objective="sharpe", folds=1)
    assert [d["label"] for d in one["dimensions"]] == ["x", "train sharpe"]  # one fold: no fold axis


def test_stability_spread_is_a_share_of_the_searched_range():
    chosen = [{"x": 1.0, "n": 10, "flag": True, "mode": "a"}, {"x": 1.6, "n": 10, "flag": False, "mode": "a"}, None]
    rows = {r["name"]: r for r in stability_rows(chosen, SPACE)}
    assert rows["x"]["values"] == [1.0, 1.6, None]
    assert rows["x"]["spread_pct"] == pytest.approx((1.6 - 1.0) / (2.0 - 0.5) * 100)  # 40 %
    assert rows["n"]["spread_pct"] == 0.0 and rows["n"]["distinct"] == 1
    assert rows["flag"]["spread_pct"] is None and rows["flag"]["distinct"] == 2
    assert rows["mode"]["distinct"] == 1
    lone = stability_rows([{"x": 1.0}], SPACE[:1])[0]
    assert lone["spread_pct"] is None and not math.isnan(lone["min"])


def test_dsr_and_pbo_verdicts_follow_their_numbers():
    from apps.research.views import DSR_FORMULA, PBO_FORMULA, _dsr_view, _pbo_view

    base = {"sr0": 0.1, "sr": 0.2, "n_obs": 60, "skew": 0.0, "kurtosis": 3.0, "z": 1.0, "reason": ""}
    ok = _dsr_view({**base, "probability": 0.97, "n_trials": 240})
    assert (ok["level"], ok["text"]) == ("ok", "0.970") and "best of 240 trials" in ok["verdict"]
    assert "×√365 = 3.82" in ok["detail"]  # 0.2 per day x sqrt(365)
    assert _dsr_view({**base, "probability": 0.6, "n_trials": 10})["verdict"].startswith("not significant: 40%")
    assert _dsr_view({**base, "probability": 0.2, "n_trials": 10})["level"] == "bad"
    na = _dsr_view({"probability": None, "n_trials": 0, "reason": "fewer than 2 observations"})
    assert na["text"] == "n/a" and na["verdict"] == "not computed: fewer than 2 observations"
    assert ok["formula"] == DSR_FORMULA and "Φ⁻¹(1 − 1/N)" in DSR_FORMULA
    p = {"n_splits": 16, "n_obs": 80, "n_combinations": 12870, "n_configs": 240, "prob_oos_loss": 0.5,
         "logit_median": -0.4, "reason": ""}
    assert [_pbo_view({**p, "value": v})["level"] for v in (0.1, 0.2, 0.3, 0.5, 0.51)] == [
        "ok", "ok", "warn", "warn", "bad"]
    bad = _pbo_view({**p, "value": 0.69})
    assert bad["text"] == "69%" and "12,870 splits" in bad["detail"] and "in 50% of the splits" in bad["detail"]
    assert _pbo_view({"value": None, "reason": "fewer than 2 trials"})["verdict"] == "not computed: fewer than 2 trials"
    assert "λ = ln(ω ÷ (1 − ω))" in PBO_FORMULA
