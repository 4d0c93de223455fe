"""Lab runs through a REAL Celery worker process on the `research` queue, on real candles in the test DB.

- a run queued by `lab_run_create` is claimed by the worker, pushes its progress to the `lab` group at each
  stage, and ends done with its results;
- crash safety: the worker is SIGKILLed mid-run at a crash point of tests/lab/crashpoints.py (held open
  inside the run's transaction until the kill, so the moment is deterministic): once in the middle of the
  run (stage "walking"; the pool process is killed), once inside the results transaction after every trade
  and signal row was inserted (the whole worker is killed). Either way the run is never "done" and no result
  row is visible; the sweeper marks it failed ("worker lost"), and a re-queue on a fresh worker runs it to
  done with exactly the trades of an uninterrupted run.
"""

import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.lab.models import BacktestRun, BacktestSignal, BacktestTrade
from apps.lab.services import lab_run_create, lab_run_execute, lab_run_requeue, lab_runs_sweep
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
from tests.lab.conftest import lab_request

pytestmark = [pytest.mark.postgres, pytest.mark.services, pytest.mark.django_db(transaction=True)]
CRASH_ENV = {"DJANGO_SETTINGS_MODULE": "tests.lab.crash_settings"}


def wait_status(run_id: int, statuses: set[str], timeout: float = 60, proc=None) -> BacktestRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = BacktestRun.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        time.sleep(0.1)
    log = worker_log(proc)[-3000:] if proc is not None else ""
    raise AssertionError(f"run {run_id} still {run.status} ({run.stage}) after {timeout} s\n{log}")


def no_results(run_id: int) -> bool:
    return not BacktestTrade.objects.filter(run_id=run_id).exists() and \
        not BacktestSignal.objects.filter(run_id=run_id).exists()


def trades_of(run_id: int) -> list[tuple]:
    return list(BacktestTrade.objects.filter(run_id=run_id).order_by("seq").values_list(
        "ghost", "side", "entry_time", "entry_price", "exit_time", "exit_price", "reason", "net_pnl"))


def test_worker_runs_a_run_to_done_and_pushes_progress(btc, operator, lone_broker) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("lab", channel)
    worker = worker_start("lab-ok", queues="research", concurrency=1)
    try:
        run = lab_run_create(actor=operator, settings=lab_request(btc))  # queued after commit (autocommit here)
        done = wait_status(run.pk, {"done", "failed", "cancelled"}, proc=worker)
        assert done.status == "done", done.error
        assert done.started_at and done.finished_at and done.bars_done == done.bars_total == 5760
        assert BacktestTrade.objects.filter(run=done).exists()
    finally:
        proc_kill(worker)
    events = async_to_sync(events_until)(layer, channel, "done")
    assert all(e["type"] == "lab.progress" and e["run_id"] == run.pk for e in events)
    seen = [(e["status"], e["stage"]) for e in events]
    assert seen[0] == ("queued", "") and seen[-1] == ("done", "")
    stages = [s for st, s in seen if st == "running"]
    assert [s for k, s in enumerate(stages) if k == 0 or stages[k - 1] != s] == [
        "loading bars", "evaluating ghosts", "walking", "storing"]


@pytest.mark.parametrize(("point", "how"), [("lab_walking", "child"), ("lab_done", "worker")])
def test_a_killed_worker_never_leaves_a_done_run(btc, operator, lone_broker, point: str, how: str) -> None:
    reference = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    assert lab_run_execute(run_id=reference.pk).status == "done"
    expected = trades_of(reference.pk)
    assert expected

    crash_point_arm(point)
    worker = worker_start("lab-crash1", queues="research", concurrency=1, env=CRASH_ENV)
    try:
        run = lab_run_create(actor=operator, settings=lab_request(btc))
        pid = crash_point_wait(point, worker)
        # while the worker holds the point, nothing of the open transaction is visible
        held = BacktestRun.objects.get(pk=run.pk)
        assert held.status == "running" and held.summary is None
        assert no_results(run.pk)
        worker_kill_at(worker, pid, how)
        time.sleep(1.5)
        killed = BacktestRun.objects.get(pk=run.pk)
        assert killed.status == "running", "a killed run must never be done (and no one else may finish it)"
        assert no_results(run.pk)
        # the beat sweeper (60 s in the desk; 1 s here, the worker being dead) marks it failed
        assert lab_runs_sweep(stale_s=1) == [run.pk]
        failed = BacktestRun.objects.get(pk=run.pk)
        assert failed.status == "failed" and failed.error.startswith("worker lost")
        assert failed.summary is None and failed.series is None
        if how == "worker":
            worker = worker_start("lab-crash2", queues="research", concurrency=1, env=CRASH_ENV)
        lab_run_requeue(run_id=run.pk, actor=operator)
        done = wait_status(run.pk, {"done", "failed", "cancelled"}, proc=worker)
        assert done.status == "done", done.error
        assert trades_of(run.pk) == expected  # exactly the uninterrupted run's trades
        assert done.fingerprint == BacktestRun.objects.get(pk=reference.pk).fingerprint
    finally:
        crash_point_disarm()
        proc_kill(worker)
