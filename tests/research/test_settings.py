"""Study settings: every refused request says which field and why (keys the study form maps to its fields),
defaults are filled in, a grid study's budget is the grid, and the services refuse a viewer."""

import pytest
from django.core.exceptions import PermissionDenied

from apps.audit.models import AuditEvent
from apps.engine.search_space import default_space
from apps.research.models import Study
from apps.research.services import ResearchError, study_create, study_settings_validate
from tests.research.conftest import DAYS, END, START, study_request

pytestmark = pytest.mark.django_db


def errors_of(data) -> dict[str, list[str]]:
    with pytest.raises(ResearchError) as e:
        study_settings_validate(data)
    return e.value.errors


def test_a_valid_request_is_normalised_with_its_defaults(btc9) -> None:
    s = study_settings_validate({"instrument_id": btc9.pk, "start": START.isoformat(), "end": END.isoformat(),
                                 "target": "spike_fader", "train_days": 4, "test_days": 2})
    assert s["target"] == "spike_fader" and [g["kind"] for g in s["ghosts"]] == ["spike_fader"]
    # the engine's default space, named by field, with the run ghost it belongs to
    assert [r["name"] for r in s["space"]] == [r.name for r in default_space("spike_fader")]
    assert all(r["ghost"] == "spike_fader" and r["field"] == r["name"] for r in s["space"])
    assert (s["objective"], s["min_trades"], s["scheme"], s["sampler"]) == ("sharpe", 5, "rolling", "tpe")
    assert (s["budget_trials"], s["budget_minutes"], s["batch_size"]) == (50, None, 8)
    assert s["step_days"] == s["test_days"] == 2 and s["train_days"] == 4  # step defaults to the test length
    # the lab's settings of the rest, as a lab run would have them
    assert s["sizing"]["mode"] == "risk" and s["start_capital"] == "10000" and s["fee"]["taker_fee"] == 0.001
    assert s["warmup_minutes"] >= 115  # the fader's window + volume lookback, at the space's widest


def test_desk_studies_name_parameters_by_kind(btc9) -> None:
    s = study_settings_validate(study_request(btc9, target="desk", params=None, space=[
        {"name": "spike_fader.spike_threshold_pct", "low": 0.8, "high": 1.6},
        {"name": "trend_filter.fast_periods", "low": 30, "high": 90}]))
    assert [g["kind"] for g in s["ghosts"]] == ["spike_fader", "cvd_detector", "trend_filter", "whale_follower",
                                                "liquidation_hunter"]
    assert [(r["name"], r["ghost"], r["field"]) for r in s["space"]] == [
        ("spike_fader.spike_threshold_pct", "spike_fader", "spike_threshold_pct"),
        ("trend_filter.fast_periods", "trend_filter", "fast_periods")]


def test_bad_settings_are_refused_per_field(btc9) -> None:
    errs = errors_of(study_request(btc9, target="nope"))
    assert "unknown ghost kind 'nope'" in errs["target"][0]
    assert "choose a ghost kind" in errors_of(study_request(btc9, target=None))["target"][0]
    errs = errors_of(study_request(btc9, objective="alpha", scheme="expanding", sampler="cmaes", min_trades=-1,
                                   batch_size=0, seed=1.5))
    assert set(errs) >= {"objective", "scheme", "sampler", "min_trades", "batch_size", "seed"}
    assert "objective must be one of sharpe, sortino, profit_factor, net_pnl, calmar" in errs["objective"][0]
    assert "scheme must be one of anchored, rolling" in errs["scheme"][0]
    assert "sampler must be one of tpe, grid, random" in errs["sampler"][0]
    # no fold fits: the range has 9 whole days
    errs = errors_of(study_request(btc9, train_days=8, test_days=2))
    assert f"the range has {DAYS}" in errs["train_days"][0]
    assert "must be at least test_days" in errors_of(study_request(btc9, step_days=1))["step_days"][0]
    assert "whole number of days" in errors_of(study_request(btc9, train_days=2.5))["train_days"][0]
    # budget: one of trials or minutes, in bounds
    assert "not both" in errors_of(study_request(btc9, budget_minutes=5))["budget_trials"][0]
    assert "between 1 and 5,000" in errors_of(study_request(btc9, budget_trials=0))["budget_trials"][0]
    assert "budget_minutes must be" in errors_of(study_request(btc9, budget_trials=None,
                                                                budget_minutes=-1))["budget_minutes"][0]
    # the lab's fields keep the lab's messages
    errs = errors_of(study_request(btc9, start="2024-01-01", end="2024-02-01", sizing={"mode": "martingale"}))
    assert "no stored 1m candles" in errs["start"][0] and "sizing.mode must be one of" in errs["sizing"][0]


def test_the_space_is_judged_by_the_engine_against_each_config_bound(btc9) -> None:
    errs = errors_of(study_request(btc9, space=[
        {"name": "spike_threshold_pct", "low": 0.5, "high": 60},  # the config allows < 50
        {"name": "take_profit_pct", "low": 0.4, "high": 0.2},
        {"name": "colour", "low": 1, "high": 2}]))
    assert "outside the allowed range" in errs["space.spike_threshold_pct"][0]
    assert "must be below high" in errs["space.take_profit_pct"][0]
    assert "unknown spike_fader parameter 'colour'" in errs["space.colour"][0]
    assert "empty" in errors_of(study_request(btc9, space=[]))["space"][0]
    # fixed params that the config refuses land on the form's fixed-params box
    errs = errors_of(study_request(btc9, params={"spike_threshold_pct": 0.5, "take_profit_pct": 0.8}))
    assert "must be below spike_threshold_pct" in errs["fixed.spike_fader"][0]


def test_a_grid_study_needs_steps_and_its_budget_is_the_grid(btc9) -> None:
    errs = errors_of(study_request(btc9, sampler="grid", space=[
        {"name": "spike_threshold_pct", "low": 0.5, "high": 1.5}]))
    assert "a grid search needs a step" in errs["space"][0]
    s = study_settings_validate(study_request(btc9, sampler="grid", budget_trials=500))
    assert s["grid_size"] == 21 * 6 and s["budget_trials"] == 21 * 6  # 0.5..1.5 / 0.05 x 0.2..0.45 / 0.05


def test_create_stores_folds_days_and_fingerprint_and_refuses_a_viewer(btc9, operator, viewer) -> None:
    with pytest.raises(PermissionDenied):
        study_create(actor=viewer, settings=study_request(btc9), queue=False)
    assert not Study.objects.exists()
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    assert study.status == "queued" and study.trials_total == 3 * 8
    assert [(f["train_start"][:10], f["test_start"][:10], f["test_end"][:10]) for f in study.folds] == [
        ("2025-06-19", "2025-06-22", "2025-06-24"), ("2025-06-21", "2025-06-24", "2025-06-26"),
        ("2025-06-23", "2025-06-26", "2025-06-28")]
    assert study.days[0] == "2025-06-19" and study.days[-1] == "2025-06-27" and len(study.days) == DAYS
    assert len(study.fingerprint) == 64
    again = study_create(actor=operator, settings=study_request(btc9), queue=False)
    assert again.fingerprint == study.fingerprint  # same code, data and settings
    other = study_create(actor=operator, settings=study_request(btc9, seed=8), queue=False)
    assert other.fingerprint != study.fingerprint
    ev = AuditEvent.objects.filter(action="study.created").first()
    assert ev.actor == operator and ev.after["trials_total"] == 24
