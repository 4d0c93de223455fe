"""Studies through REAL Celery worker processes on the `research` queue, on real candles in the test DB.

- 1 and 2 worker processes give exactly the study run inline in the test process (same trials, same params,
  same scores, same results): the batches are fixed, the samplers seeded, so the order in which trials
  complete does not matter; the progress reaches the `lab` group;
- a SIGKILLed trial is retried and the study ends with the same result as an undisturbed one: the worker is
  held at a crash point of tests/research/crashpoints.py, then killed: once mid-trial (the pool process:
  Celery's main process re-queues the acks_late task, reject_on_worker_lost), once inside the transaction that
  stores the trial's result (the whole worker: the broker re-delivers the unacked task to a new worker after
  its visibility timeout, 3 s here through HFT_BROKER_VISIBILITY_TIMEOUT). Nothing re-queues by hand.
"""

import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.research.models import Study, Trial
from apps.research.services import study_create, study_run_inline
from tests.conftest import events_until
from tests.e2e.procs import (
    crash_point_arm,
    crash_point_disarm,
    crash_point_wait,
    proc_kill,
    worker_kill_at,
    worker_log,
    worker_start,
)
from tests.research.conftest import study_request

pytestmark = [pytest.mark.postgres, pytest.mark.services, pytest.mark.django_db(transaction=True)]
VISIBILITY_S = 3
CRASH_ENV = {"DJANGO_SETTINGS_MODULE": "tests.research.crash_settings",
             "HFT_BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_S)}


def wait_done(study_id: int, proc, timeout: float = 180) -> Study:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = Study.objects.get(pk=study_id)
        if study.status in ("done", "failed", "cancelled"):
            return study
        time.sleep(0.1)
    raise AssertionError(f"study {study_id} still {study.status} ({study.trials_done} trials) after {timeout} s\n"
                         f"{worker_log(proc)[-3000:]}")


def outcome(study: Study) -> tuple[list[tuple], dict]:
    """What must not depend on the workers: every trial (fold, number, batch, params, status, scores, daily
    returns) and the results (trial ids aside: they are row ids of each study)."""
    trials = list(Trial.objects.filter(study=study).defer(None).order_by("fold", "number").values_list(
        "fold", "number", "batch", "params", "status", "value", "test_value", "train", "test", "daily", "n_trades"))
    results = {**study.results, "folds": [{k: v for k, v in f.items() if k != "trial_id"}
                                          for f in study.results["folds"]]}
    return trials, results


@pytest.fixture
def reference(btc9, operator):
    study = study_create(actor=operator, settings=study_request(btc9), queue=False)
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done", study.error
    return outcome(study)


@pytest.mark.parametrize("processes", [1, 2])
def test_one_or_two_worker_processes_give_the_inline_study(btc9, operator, lone_broker, reference,
                                                           processes: int) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("lab", channel)
    worker = worker_start(f"research-{processes}", queues="research", concurrency=processes)
    try:
        study = study_create(actor=operator, settings=study_request(btc9))  # its first step queued on commit
        done = wait_done(study.pk, worker)
        assert done.status == "done", done.error
        # read before the worker dies: the last push leaves just after the commit the test polls for
        events = [e for e in async_to_sync(events_until)(layer, channel, "done", 10) if e["study_id"] == study.pk]
    finally:
        proc_kill(worker)
    assert outcome(done) == reference
    assert done.trials_done == done.trials_total == 24
    assert all(e["type"] == "study.progress" for e in events)
    assert events[0]["status"] == "queued" and events[-1]["status"] == "done"
    counts = [e["trials_done"] for e in events]
    assert counts[-1] == 24 and max(counts) == 24
    if processes == 1:  # two processes push after their own commits: two pushes can arrive swapped
        assert counts == sorted(counts)
    assert [f["done"] for f in events[-1]["folds"]] == [8, 8, 8]
    # the best train value per fold as the results chose it
    assert [f["best_train"] for f in events[-1]["folds"]] == [f["is_value"] for f in reference[1]["folds"]]


@pytest.mark.parametrize(("point", "how"), [("trial_run", "child"), ("trial_write", "worker")])
def test_a_killed_trial_is_retried_and_the_study_ends_as_undisturbed(btc9, operator, lone_broker, reference,
                                                                     point: str, how: str) -> None:
    crash_point_arm(point)
    worker = worker_start("research-crash1", queues="research", concurrency=1, env=CRASH_ENV)
    try:
        study = study_create(actor=operator, settings=study_request(btc9))
        pid = crash_point_wait(point, worker)
        # held: one trial claimed (running, first attempt), nothing of its result visible
        (held,) = Trial.objects.filter(study=study, status="running").defer(None)
        assert held.attempts == 1 and held.value is None and held.train is None and held.daily is None
        assert Study.objects.get(pk=study.pk).trials_done == 0
        worker_kill_at(worker, pid, how)
        if how == "worker":
            time.sleep(0.5)
            killed = Trial.objects.defer(None).get(pk=held.pk)
            assert killed.status == "running" and killed.value is None  # the transaction died with the worker
            worker = worker_start("research-crash2", queues="research", concurrency=1, env=CRASH_ENV)
        done = wait_done(study.pk, worker)
        assert done.status == "done", done.error
    finally:
        crash_point_disarm()
        proc_kill(worker)
    retried = Trial.objects.get(pk=held.pk)
    assert retried.status == "done" and retried.attempts == 2
    assert outcome(done) == reference
