"""Search spaces (apps.engine.search_space) on every registered ghost kind: the captured bounds are the ones
each config enforces, default spaces stay inside them and validate, bad rows get messages per parameter, and
optuna's samplers (random, TPE, grid) draw inside the ranges."""

import dataclasses
import typing

import optuna
import pytest

from apps.engine.registry import DESK_KINDS, GHOSTS
from apps.engine.search_space import (
    Bound,
    ParamRange,
    SpaceError,
    default_space,
    grid,
    param_bounds,
    suggest,
    validate_space,
)
from apps.engine.types import RANGE_RECORDER, ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

KINDS = sorted(GHOSTS)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _types(kind: str) -> dict[str, type]:
    cls = GHOSTS[kind].config_cls
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _outside(b: Bound, typ: type) -> tuple[float, float]:
    """A value just below the low bound and one just above the high bound (the bound itself when open)."""
    if typ is int:
        return (b.lo if b.lo_open else b.lo - 1), (b.hi if b.hi_open else b.hi + 1)
    return (b.lo if b.lo_open else b.lo - max(1e-6, abs(b.lo) * 1e-6)), \
        (b.hi if b.hi_open else b.hi + max(1e-6, abs(b.hi) * 1e-6))


@pytest.mark.parametrize("kind", KINDS)
def test_captured_bounds_are_the_ones_the_config_enforces(kind: str) -> None:
    cls = GHOSTS[kind].config_cls
    types = _types(kind)
    bounds = param_bounds(kind)
    defaults = cls().to_params()
    # every numeric field has a range check, and nothing else is captured
    assert {n for n, t in types.items() if t in (int, float)} == set(bounds)
    for name, b in bounds.items():
        assert b.name == name and b.contains(defaults[name])
        for v in _outside(b, types[name]):
            assert not b.contains(v)
            v = int(v) if types[name] is int else v
            with pytest.raises(ConfigError, match=rf"^{cls.KIND}\.{name} must be "):
                cls.from_params({name: v})


def test_the_capture_is_scoped() -> None:
    param_bounds("trend_filter")
    assert RANGE_RECORDER.get() is None  # reset after the capture: check_range records nothing elsewhere


def test_a_bound_reads_like_check_range() -> None:
    b = param_bounds("spike_fader")["spike_threshold_pct"]
    assert b == Bound("spike_threshold_pct", 0.0, 50.0, lo_open=True, hi_open=True, unit="percent")
    assert b.text() == "> 0 and < 50 (percent)"
    assert param_bounds("spike_fader")["window_minutes"].text() == ">= 1 and <= 1440 (minutes)"


@pytest.mark.parametrize("kind", KINDS)
def test_default_space_is_inside_the_bounds_around_the_defaults_and_validates(kind: str) -> None:
    space = default_space(kind)
    bounds, types = param_bounds(kind), _types(kind)
    defaults = GHOSTS[kind].config_cls().to_params()
    assert space, f"{kind} has searchable parameters"
    assert "priority" not in {r.name for r in space}
    for r in space:
        b = bounds[r.name]
        assert r.kind == ("int" if types[r.name] is int else "float")
        assert b.contains(r.low) and b.contains(r.high) and r.low < r.high
        assert r.low <= defaults[r.name] <= r.high
        # 0.5x .. 2x the default unless a bound cuts it
        assert r.low == pytest.approx(0.5 * defaults[r.name], abs=1) or r.low > 0.5 * defaults[r.name]
        assert r.high == pytest.approx(2 * defaults[r.name], abs=1) or r.high < 2 * defaults[r.name]
    assert validate_space(kind, [r.as_dict() for r in space]) == space
    assert validate_space(kind, space) == space


def test_spike_fader_default_space_by_hand() -> None:
    space = {r.name: r for r in default_space("spike_fader")}
    assert space["spike_threshold_pct"] == ParamRange("spike_threshold_pct", "float", 0.6, 2.4)  # 1.2 x 0.5 .. 2
    assert space["window_minutes"] == ParamRange("window_minutes", "int", 8, 30, 1)  # ceil(7.5) .. 30
    assert space["retracement"] == ParamRange("retracement", "float", 0.15, 0.6)
    # cvd aggressor_min_share: 0.55 x 0.5 is below the open bound 0.5 -> the midpoint (0.5 + 0.55) / 2
    cvd = {r.name: r for r in default_space("cvd_detector")}
    assert cvd["aggressor_min_share"] == ParamRange("aggressor_min_share", "float", 0.525, 1.0)  # 1.1 > 1 -> 1


def test_desk_space_prefixes_every_desk_kind() -> None:
    space = default_space("desk")
    kinds = {r.name.split(".", 1)[0] for r in space}
    assert kinds == set(DESK_KINDS) and "textbook_fader" not in kinds
    assert len(space) == sum(len(default_space(k)) for k in DESK_KINDS)
    assert validate_space("desk", [r.as_dict() for r in space]) == space
    with pytest.raises(SpaceError) as e:
        validate_space("desk", [{"name": "spike_threshold_pct", "low": 1, "high": 2},
                                {"name": "textbook_fader.move_pct", "low": 1, "high": 2}])
    assert e.value.errors == {
        "spike_threshold_pct": ["a desk study names parameters '<ghost kind>.<field>' "
                                "(e.g. spike_fader.spike_threshold_pct)"],
        "textbook_fader.move_pct": ["'textbook_fader' is not a desk ghost kind; desk kinds: "
                                    + ", ".join(DESK_KINDS)],
    }


def test_validate_space_normalises_names_and_fills_kinds() -> None:
    space = validate_space("liquidation_hunter", [
        {"name": "liquidation_hunter.take_profit_pct", "low": 0.5, "high": 2, "step": 0.25},
        {"name": "cooldown_minutes", "low": 10, "high": 60.0, "step": 10},
        {"name": "use_trend_filter"},
        {"name": "mode", "choices": ["fade", "follow"]},
        {"name": "window_minutes", "kind": "choice", "choices": [2, 3.0, 5]},
    ])
    assert space == [
        ParamRange("take_profit_pct", "float", 0.5, 2.0, 0.25),
        ParamRange("cooldown_minutes", "int", 10, 60, 10),
        ParamRange("use_trend_filter", "bool", choices=(False, True)),
        ParamRange("mode", "choice", choices=("fade", "follow")),
        ParamRange("window_minutes", "choice", choices=(2, 3, 5)),
    ]
    assert isinstance(space[1].low, int) and isinstance(space[4].choices[1], int)


def test_bad_rows_get_messages_per_parameter() -> None:
    with pytest.raises(SpaceError) as e:
        validate_space("spike_fader", [
            {"name": "spike_threshold_pct", "low": 0, "high": 60},
            {"name": "foo", "low": 1, "high": 2},
            {"name": "window_minutes", "low": 1.5, "high": 30},
            {"name": "take_profit_pct", "low": 1.0, "high": 0.5},
            {"name": "min_stop_pct", "low": 0.3, "high": 1.0, "step": 0.3, "colour": "red"},
            {"name": "cooldown_seconds", "kind": "bool"},
            {"name": "max_hold_seconds", "low": "600", "high": True},
            {"low": 1, "high": 2},
            {"name": "retracement", "choices": [0.1, 0.1]},
            {"name": "min_volume_ratio", "kind": "choice", "choices": [1.0, 60.0]},
            {"name": "spike_threshold_pct", "low": 1, "high": 2},
        ])
    assert e.value.errors == {
        "spike_threshold_pct": [
            "low 0 is outside the allowed range: spike_threshold_pct must be > 0 and < 50 (percent)",
            "high 60 is outside the allowed range: spike_threshold_pct must be > 0 and < 50 (percent)",
            "listed twice"],
        "foo": ["unknown spike_fader parameter 'foo'; allowed: " + ", ".join(_types("spike_fader"))],
        "window_minutes": ["low must be a whole number, got 1.5"],
        "take_profit_pct": ["low (1) must be below high (0.5); to fix a value, set it as a fixed parameter"],
        "min_stop_pct": ["unknown key(s) colour; allowed: name, kind, low, high, step, choices",
                         "high - low (0.7) must be a whole number of steps (0.3)"],
        "cooldown_seconds": ["cooldown_seconds is a float parameter: kind must be float or choice, got 'bool'"],
        "max_hold_seconds": ["low must be a number, got '600'", "high must be a number, got True"],
        "ranges[7]": ["a range needs the parameter's name"],
        "retracement": ["a float range takes low/high/step, not choices", "low must be a number, got None",
                        "high must be a number, got None"],
        "min_volume_ratio": ["choice 60.0: spike_fader.min_volume_ratio must be > 0 and <= 50 (window mean volume / "
                             "lookback mean volume), got 60.0"],
    }
    assert str(e.value).startswith("spike_threshold_pct: low 0 is outside the allowed range")


@pytest.mark.parametrize(("rows", "errors"), [
    ([], {"space": ["the search space is empty: choose at least one parameter to search"]}),
    ({"name": "x"}, {"space": ["the search space must be a list of ranges, got dict"]}),
    ([{"name": "long_only", "choices": [True]}], {"long_only": ["choices must list at least 2 values, got [True]"]}),
    ([{"name": "long_only", "choices": [0, 1]}],
     {"long_only": ["choices of a true/false parameter must be true and false, got [0, 1]"]}),
    ([{"name": "lookback_min", "low": 5, "high": 10, "step": 0.5}],
     {"lookback_min": ["step must be a whole number for an int range, got 0.5"]}),
    ([{"name": "move_pct", "low": 0.5, "high": 1, "step": -1}], {"move_pct": ["step must be a number > 0, got -1"]}),
    ([{"name": "spike_fader.move_pct", "low": 0.5, "high": 1}],
     {"spike_fader.move_pct": ["a textbook_fader study searches textbook_fader parameters only, not spike_fader"]}),
])
def test_more_refusals(rows: object, errors: dict) -> None:
    with pytest.raises(SpaceError) as e:
        validate_space("textbook_fader", rows)  # type: ignore[arg-type]
    assert e.value.errors == errors


def test_a_bad_choice_of_a_text_field_uses_the_configs_own_message() -> None:
    with pytest.raises(SpaceError) as e:
        validate_space("whale_follower", [{"name": "print_rule", "choices": ["both", "biggest"]}])
    assert e.value.errors == {"print_rule": [
        "choice 'biggest': whale_follower.print_rule must be one of both, notional, multiple, either, got 'biggest'"]}


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown ghost kind 'spike'"):
        default_space("spike")
    with pytest.raises(ConfigError, match="unknown ghost kind 'spike'"):
        validate_space("spike", [{"name": "x"}])


@pytest.mark.parametrize("kind", KINDS)
def test_optuna_samples_stay_inside_every_range(kind: str) -> None:
    space = default_space(kind)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=7))
    for _ in range(25):
        trial = study.ask()
        params = suggest(trial, space)
        assert set(params) == {r.name for r in space}
        for r in space:
            v = params[r.name]
            assert r.low <= v <= r.high
            assert isinstance(v, int) if r.kind == "int" else isinstance(v, float)
        study.tell(trial, 0.0)


def test_suggest_is_deterministic_under_a_seed_with_choices_and_steps() -> None:
    space = validate_space("liquidation_hunter", [
        {"name": "take_profit_pct", "low": 0.5, "high": 2, "step": 0.25},
        {"name": "use_trend_filter"}, {"name": "mode", "choices": ["fade", "follow"]},
    ])

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for k in range(15):
            trial = study.ask()
            p = suggest(trial, space)
            study.tell(trial, float(k % 4))
            out.append(p)
        return out

    a = draw(3)
    assert a == draw(3) and a != draw(4)
    assert {p["take_profit_pct"] for p in a} <= {0.5 + 0.25 * k for k in range(7)}
    assert {p["mode"] for p in a} <= {"fade", "follow"} and {p["use_trend_filter"] for p in a} <= {True, False}


def test_grid_values_by_hand_and_through_optunas_grid_sampler() -> None:
    space = validate_space("spike_fader", [
        {"name": "spike_threshold_pct", "low": 0.8, "high": 1.4, "step": 0.2},
        {"name": "window_minutes", "low": 10, "high": 20, "step": 5},
    ])
    g = grid(space)
    assert g == {"spike_threshold_pct": [0.8, 1.0, 1.2, 1.4], "window_minutes": [10, 15, 20]}
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(g, seed=0))
    seen = set()
    for k in range(12):
        trial = study.ask()
        p = suggest(trial, space)
        seen.add((p["spike_threshold_pct"], p["window_minutes"]))
        if k < 11:
            study.tell(trial, 0.0)
        else:
            # optuna 5.1: the GridSampler stops the study once the grid is exhausted, and Study.stop outside
            # optimize() raises; an ask-and-tell driver must expect it on the grid's last tell
            with pytest.raises(RuntimeError, match="Study.stop"):
                study.tell(trial, 0.0)
    assert seen == {(a, b) for a in g["spike_threshold_pct"] for b in g["window_minutes"]}
    with pytest.raises(ConfigError, match="spike_threshold_pct: a grid search needs a step for every float range"):
        grid(default_space("spike_fader"))


def test_default_space_samples_are_often_feasible_for_the_spike_fader() -> None:
    # cross-field rules (take_profit_pct < spike_threshold_pct, min_target_pct < take_profit_pct) are not ranges:
    # some samples are infeasible trials, but most of the default space is usable
    space = default_space("spike_fader")
    cls = GHOSTS["spike_fader"].config_cls
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    ok = 0
    for _ in range(200):
        trial = study.ask()
        try:
            cls.from_params(suggest(trial, space))
            ok += 1
        except ConfigError as exc:
            assert "must be below" in str(exc)
        study.tell(trial, 0.0)
    assert 0.5 < ok / 200 < 1.0
