"""Steering a study, at the service level on real candles: determinism under a seed (twice the same, whatever
the order its trials complete in), pause / resume / cancel (audited, a viewer refused), the sweeper re-
dispatching what a dead worker or a lost message left, a trial that keeps killing its worker, and apply (a
trial's params onto a ghost, with its source; a viewer refused).

What is dispatched is read from the real broker (the test Redis): the `research` queue's messages."""

import ast
import json
import os
from datetime import timedelta

import pytest
import redis
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from apps.ghosts.services import ghost_create, ghost_update_params
from apps.research.events import progress_payload
from apps.research.models import Study, Trial
from apps.research.services import (
    MAX_ATTEMPTS,
    ResearchError,
    studies_sweep,
    study_apply,
    study_cancel,
    study_create,
    study_pause,
    study_resume,
    study_run_inline,
    study_step,
    trial_execute,
)
from tests.research.conftest import study_request

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def outcome(study: Study) -> tuple[list[tuple], dict]:
    study.refresh_from_db()
    trials = list(Trial.objects.filter(study=study).defer(None).order_by("fold", "number").values_list(
        "fold", "number", "batch", "params", "status", "value", "test_value", "train", "test", "daily"))
    results = {**study.results, "folds": [{k: v for k, v in f.items() if k != "trial_id"}
                                          for f in study.results["folds"]]}
    return trials, results


def queued() -> list[tuple[str, tuple]]:
    """(task name, args) of every message waiting on the broker's `research` queue, oldest first."""
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    out = []
    for raw in reversed(r.lrange("research", 0, -1)):  # LPUSH: the newest first
        headers = json.loads(raw)["headers"]
        out.append((headers["task"].rsplit(".", 1)[1], ast.literal_eval(headers["argsrepr"])))
    return out


@pytest.fixture
def done_study(btc9, operator) -> Study:
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done", study.error
    return study


def test_the_same_seed_gives_the_same_study_in_any_completion_order(btc9, operator, done_study) -> None:
    reference = outcome(done_study)
    assert len(reference[0]) == 24 and done_study.trials_done == 24
    twice = study_run_inline(study_id=study_create(actor=operator, settings=study_request(btc9), queue=False).pk)
    assert outcome(twice) == reference
    # each batch executed in reverse order: the samplers only see finished batches, told in number order
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    while ids := study_step(study_id=study.pk, dispatch=False):
        for tid in reversed(ids):
            trial_execute(trial_id=tid, queue_next=False)
    assert outcome(study) == reference
    # another seed asks other params: the comparison above can fail
    other = study_run_inline(study_id=study_create(actor=operator, settings=study_request(btc9, seed=8),
                                                   queue=False).pk)
    assert [t[3] for t in outcome(other)[0]] != [t[3] for t in reference[0]]


def test_pause_resume_and_cancel(btc9, operator, viewer, done_study, django_capture_on_commit_callbacks) -> None:
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    first = study_step(study_id=study.pk, dispatch=False)
    assert len(first) == 3 * 4  # a batch of 4 per fold
    for tid in first[:5]:
        trial_execute(trial_id=tid, queue_next=False)
    with pytest.raises(PermissionDenied):
        study_pause(study_id=study.pk, actor=viewer)
    paused = study_pause(study_id=study.pk, actor=operator)
    assert paused.status == "paused" and paused.resumed_at is None and paused.active_s > 0
    assert progress_payload(paused)["status"] == "paused" and progress_payload(paused)["eta_s"] is None
    assert trial_execute(trial_id=first[5]).status == "pending"  # a delivery while paused runs nothing
    assert study_step(study_id=study.pk, dispatch=False) == []
    assert study_pause(study_id=study.pk, actor=operator).status == "paused"  # idempotent
    with django_capture_on_commit_callbacks(execute=True):
        resumed = study_resume(study_id=study.pk, actor=operator)
    assert resumed.status == "running"
    # every pending trial dispatched again, and a step
    assert queued() == [("trial_task", (tid,)) for tid in first[5:]] + [("study_step_task", (study.pk,))]
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done" and outcome(study) == outcome(done_study)  # a pause changes nothing
    assert [e.action for e in AuditEvent.objects.filter(object_id=str(study.pk), action__startswith="study.")
            .order_by("id")] == ["study.created", "study.paused", "study.resumed"]

    other = study_create(actor=operator, settings=study_request(btc9), queue=False)
    ids = study_step(study_id=other.pk, dispatch=False)
    with pytest.raises(PermissionDenied):
        study_cancel(study_id=other.pk, actor=viewer)
    cancelled = study_cancel(study_id=other.pk, actor=operator)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None and cancelled.results is None
    assert trial_execute(trial_id=ids[0]).status == "pending"  # never runs
    assert study_step(study_id=other.pk, dispatch=False) == []
    assert study_resume(study_id=other.pk, actor=operator).status == "cancelled"  # over is over
    assert study_cancel(study_id=study.pk, actor=operator).status == "done"  # a finished study stays so
    assert AuditEvent.objects.filter(action="study.cancelled").count() == 1


def test_the_sweeper_dispatches_what_a_dead_worker_or_a_lost_message_left(
        btc9, operator, django_capture_on_commit_callbacks) -> None:
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    ids = study_step(study_id=study.pk, dispatch=False)
    long_ago = timezone.now() - timedelta(seconds=300)
    # a worker died holding ids[0]; the messages of the others were lost
    Trial.objects.filter(pk=ids[0]).update(status="running", started_at=long_ago, attempts=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert studies_sweep(stale_s=60) == [study.pk]
    # only the stuck trial: the study beat just now, the messages of the pending ones may still be queued
    assert queued() == [("trial_task", (ids[0],))]
    redis.Redis.from_url(os.environ["REDIS_URL"]).delete("research")
    Study.objects.filter(pk=study.pk).update(heartbeat_at=long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        assert studies_sweep(stale_s=60) == [study.pk]
    assert sorted(queued()) == sorted([("trial_task", (tid,)) for tid in ids] + [("study_step_task", (study.pk,))])
    assert Study.objects.get(pk=study.pk).heartbeat_at > long_ago  # the next sweep waits again
    taken = trial_execute(trial_id=ids[0], queue_next=False)  # the re-delivery takes the trial over
    assert taken.status == "done" and taken.attempts == 2
    # a trial whose worker died MAX_ATTEMPTS times is failed, not run again
    Trial.objects.filter(pk=ids[1]).update(status="running", started_at=long_ago, attempts=MAX_ATTEMPTS)
    gave_up = trial_execute(trial_id=ids[1], queue_next=False)
    assert gave_up.status == "failed" and gave_up.error.startswith(f"gave up after {MAX_ATTEMPTS} attempts")
    assert Study.objects.get(pk=study.pk).trials_done == 2
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done" and study.results["trials"]["failed"] == 1


def test_apply_puts_a_trial_on_a_ghost_with_its_source_and_refuses_a_viewer(btc9, operator, viewer,
                                                                            done_study) -> None:
    fader = ghost_create(name="fader", kind="spike_fader", instrument=btc9)
    cvd = ghost_create(name="cvd", kind="cvd_detector", instrument=btc9)
    fold = done_study.results["folds"][1]
    trial = Trial.objects.get(pk=fold["trial_id"])
    before = dict(fader.params)
    with pytest.raises(PermissionDenied):
        study_apply(study_id=done_study.pk, trial_id=trial.pk, ghost_id=fader.pk, actor=viewer, reason="mine")
    with pytest.raises(PermissionDenied):
        study_apply(study_id=done_study.pk, trial_id=trial.pk, ghost_id=fader.pk, actor=None, reason="system")
    errs = lambda **kw: pytest.raises(ResearchError)  # noqa: E731
    with errs() as e:
        study_apply(study_id=done_study.pk, trial_id=trial.pk, ghost_id=fader.pk, actor=operator, reason=" ")
    assert e.value.errors == {"reason": ["a reason is required"]}
    with errs() as e:
        study_apply(study_id=done_study.pk, trial_id=trial.pk, ghost_id=cvd.pk, actor=operator, reason="x")
    assert "cvd is a cvd_detector; this study searched spike_fader" in e.value.errors["ghost"][0]
    infeasible = Trial.objects.filter(study=done_study, status="infeasible").first()
    with errs() as e:
        study_apply(study_id=done_study.pk, trial_id=infeasible.pk, ghost_id=fader.pk, actor=operator, reason="x")
    assert "is infeasible; only a done trial can be applied" in e.value.errors["trial"][0]
    assert Ghost.objects.get(pk=fader.pk).params == before and not AuditEvent.objects.filter(
        action__in=("study.applied", "ghost.params_changed")).exists()

    ghost = study_apply(study_id=done_study.pk, trial_id=trial.pk, ghost_id=fader.pk, actor=operator,
                        reason="fold 2's choice")
    # exactly the config the trial ran: the study's fixed params + the trial's searched values
    expected = {**done_study.settings["ghosts"][0]["params"], **trial.params}
    assert ghost.params == expected != before
    src = Ghost.objects.get(pk=fader.pk).params_source
    assert {k: src[k] for k in ("study_id", "trial_id", "fold", "by")} == {
        "study_id": done_study.pk, "trial_id": trial.pk, "fold": 1, "by": operator.username}
    applied = AuditEvent.objects.get(action="study.applied")
    assert applied.actor == operator and applied.reason == "fold 2's choice"
    assert applied.after["trial_id"] == trial.pk and applied.after["params"] == expected
    changed = AuditEvent.objects.get(action="ghost.params_changed")
    assert changed.reason == f"fold 2's choice (study {done_study.pk}, trial {trial.pk})"
    assert changed.before == before and changed.after["params_source"]["trial_id"] == trial.pk
    # any later change by hand says the params no longer come from the study
    ghost_update_params(ghost_id=fader.pk, params={**expected, "cooldown_seconds": 120}, actor=operator,
                        reason="by hand")
    assert Ghost.objects.get(pk=fader.pk).params_source is None


def test_a_desk_study_searches_several_ghosts_and_applies_to_each_kind(btc9, operator) -> None:
    study = study_create(actor=operator, queue=False, settings=study_request(
        btc9, target="desk", params=None, budget_trials=4, space=[
            {"name": "spike_fader.spike_threshold_pct", "low": 0.6, "high": 1.4, "step": 0.2},
            {"name": "trend_filter.fast_periods", "low": 30, "high": 90, "step": 30}],
        fixed={"spike_fader": {"take_profit_pct": 0.4, "min_target_pct": 0.2}}))
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done", study.error
    trial = Trial.objects.filter(study=study, status="done").first()
    assert set(trial.params) == {"spike_fader.spike_threshold_pct", "trend_filter.fast_periods"}
    trend = ghost_create(name="trend", kind="trend_filter", instrument=btc9)
    ghost = study_apply(study_id=study.pk, trial_id=trial.pk, ghost_id=trend.pk, actor=operator, reason="desk")
    assert ghost.params["fast_periods"] == trial.params["trend_filter.fast_periods"]
    fader = ghost_create(name="fader", kind="spike_fader", instrument=btc9)
    ghost = study_apply(study_id=study.pk, trial_id=trial.pk, ghost_id=fader.pk, actor=operator, reason="desk")
    assert ghost.params["spike_threshold_pct"] == trial.params["spike_fader.spike_threshold_pct"]
    assert ghost.params["take_profit_pct"] == 0.4  # the study's fixed params come with it


def test_a_minutes_budget_stops_asking_when_spent(btc9, operator) -> None:
    study = study_create(actor=operator, queue=False, settings=study_request(btc9, budget_trials=None,
                                                                              budget_minutes=0.001))
    assert study.trials_total is None
    study = study_run_inline(study_id=study.pk)  # the first batches run, then the 60 ms are spent
    assert study.status == "done" and study.trials_done == 3 * 4
    assert progress_payload(study)["trials_total"] is None


def test_a_study_never_mixes_data_changed_after_it_was_created(btc9, operator) -> None:
    from apps.market.models import Candle

    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    Candle.objects.filter(instrument=btc9, open_time=study.start + timedelta(days=4)).delete()  # one bar fewer
    study = study_run_inline(study_id=study.pk)
    assert study.status == "failed" and study.results is None
    assert "every trial of fold 1's batch 1 failed" in study.error
    assert "the stored bars changed since the study was created" in study.error
    assert study.trials_done == 3 * 4 and not Trial.objects.filter(study=study, status="done").exists()
