"""Feed faults with real processes: two prefork Celery workers (each -c 2 on feeds, default and ghosts), a real
`celery beat` running the desk's schedule (supervise_feeds every 10 s), Redis, and the sim feed.

- Killing (SIGKILL, main process and pool children together, as an OOM kill or a lost host does) the worker
  that runs the feed: beat's supervisor restarts the feed on the other worker within 30 s (the lock's TTL is
  15 s, the supervisor ticks every 10 s), bars go on with no gap and no duplicate, and at no moment do two
  runners of the feed exist (sampled through `celery inspect active` on both workers all along).
- (slow) Freezing the runner (SIGSTOP) past the lock's TTL: the supervisor starts another runner; when the
  frozen one wakes up it sees the lock is someone else's and stops without touching the feed status.

The measured restart time is printed. Run: `RUN_DIR=/tmp/run-x .venv/bin/pytest tests/e2e/test_faults.py -q -s`
(add `-m slow` for the freeze test).
"""

import ast
import os
import signal
import time
from datetime import timedelta

import pytest
from django.core.cache import cache

from apps.ghosts.models import Ghost
from apps.market.models import Candle, FeedStatus
from apps.market.tasks import LOCK_TTL
from apps.runtime.tasks import run_feed
from hftweb.celery import app
from tests.e2e.procs import beat_start, foreign_workers, group_pids, proc_kill, wait_until, worker_start, worker_wait

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
RESTART_BOUND_S = 30  # issue 3: the supervisor restarts a dead feed within 30 s
RUN_FEED = "apps.market.tasks.run_feed"
QUEUES = "feeds,default,ghosts"


class Cluster:
    """Two workers and beat, started by the test; every process is SIGKILLed (as a group) at teardown."""

    def __init__(self, workdir) -> None:
        self.workdir = workdir
        self.workers: dict[str, object] = {}
        self.beat = None

    def add_workers(self, *names: str) -> None:
        procs = [worker_start(n, queues=QUEUES, concurrency=2, wait=False) for n in names]
        for p in procs:
            self.workers[p.worker_name] = p
        for p in procs:
            worker_wait(p)

    def runners(self, instrument_id: int, min_age_s: float = 2.0) -> list[tuple[str, int, str]]:
        """(worker, pool pid, task id) of every run_feed of the instrument that has been running for at least
        `min_age_s`: a supervisor's extra run_feed that finds the lock taken returns at once and is no runner."""
        live = [n for n, p in self.workers.items() if p.poll() is None]
        active = app.control.inspect(destination=live, timeout=1.0).active() or {}
        out = []
        for host, tasks in active.items():
            for t in tasks:
                args = t["args"] if not isinstance(t["args"], str) else ast.literal_eval(t["args"])
                if t["name"] == RUN_FEED and args[0] == instrument_id and time.time() - t["time_start"] >= min_age_s:
                    out.append((host, t["worker_pid"], t["id"]))
        return out

    def close(self) -> None:
        for p in [self.beat, *self.workers.values()]:
            if p is not None:
                proc_kill(p)


@pytest.fixture
def cluster(desk, tmp_path):
    # Only the feed matters here: no ghost work competing for the two cores.
    Ghost.objects.update(enabled=False, status="disabled")
    c = Cluster(tmp_path)
    try:
        c.add_workers("fa", "fb")
        others = foreign_workers(set(c.workers))
        assert not others, f"other Celery workers share this broker and would take the feed: {others}"
        c.beat = beat_start(tmp_path)
        yield c
    finally:
        c.close()


def _bar_times(instrument_id: int) -> list:
    return list(Candle.objects.filter(instrument_id=instrument_id).order_by("open_time")
                .values_list("open_time", flat=True))


def _assert_bars_contiguous(instrument_id: int) -> int:
    """Every minute once: no duplicate (two runners would race on the same minutes), no hole (a restart
    continues right after the last stored bar)."""
    times = _bar_times(instrument_id)
    assert len(times) == len(set(times))
    holes = [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a != timedelta(minutes=1)]
    assert not holes, f"bars missing between {holes[:3]}"
    return len(times)



def _wait(cond, timeout: float, what: str, step: float = 0.3):
    return wait_until(cond, timeout, what, step)


def _start_feed(cluster: Cluster, instrument_id: int) -> tuple[str, int, str]:
    run_feed.delay(instrument_id)  # sim at the desk's default speed (60x: one bar per wall second)
    _wait(lambda: Candle.objects.filter(instrument_id=instrument_id).count() > 250, 60, "backfill + live bars")
    return _wait(lambda: cluster.runners(instrument_id), 20, "the runner in `inspect active`")[0]


def _stop_feed(cluster: Cluster, instrument_id: int) -> None:
    """Beat first (or its supervisor restarts the feed), then a stop request: the lock deleted."""
    proc_kill(cluster.beat)
    cache.delete(f"feed-lock:{instrument_id}")
    _wait(lambda: FeedStatus.objects.get(instrument_id=instrument_id).state == FeedStatus.State.STOPPED, 15,
          "the feed to stop")


def test_killed_feed_worker_is_replaced_by_the_other_within_30s(desk, cluster):
    inst = desk["instrument"].pk
    host, pid, _ = _start_feed(cluster, inst)
    samples = [cluster.runners(inst) for _ in range(3)]
    assert all(len(s) == 1 for s in samples), samples

    victim = cluster.workers[host]
    survivor = next(n for n in cluster.workers if n != host)
    pids = group_pids(victim)
    assert pid in pids  # the pool child running the feed belongs to the worker we kill
    bars_at_kill = Candle.objects.filter(instrument_id=inst).count()
    killed_at = time.monotonic()
    proc_kill(victim)  # SIGKILL to the worker's whole process group
    assert not group_pids(victim, wait_s=5)
    bars_at_kill = Candle.objects.filter(instrument_id=inst).count()  # the last bar may have landed meanwhile

    lock_gone_at = resumed_at = None
    new_runner = None
    max_runners = 0
    while time.monotonic() - killed_at < RESTART_BOUND_S + 15:
        runners = cluster.runners(inst, min_age_s=0.0 if resumed_at is None else 2.0)
        if resumed_at is not None:
            max_runners = max(max_runners, len(runners))
        if lock_gone_at is None and cache.get(f"feed-lock:{inst}") is None:
            lock_gone_at = time.monotonic()
        if resumed_at is None and Candle.objects.filter(instrument_id=inst).count() > bars_at_kill:
            resumed_at = time.monotonic()
            new_runner = runners or cluster.runners(inst, min_age_s=0.0)
        if resumed_at is not None and time.monotonic() - resumed_at > 5:
            break
        time.sleep(0.2)
    assert resumed_at is not None, f"no new bar within {RESTART_BOUND_S + 15} s of the kill"
    restart_s = resumed_at - killed_at
    lock_s = (lock_gone_at - killed_at) if lock_gone_at else float("nan")
    print(f"\nfeed restart after SIGKILL of {host} (pool pid {pid}): lock expired after {lock_s:.1f} s "
          f"(TTL {LOCK_TTL} s), first new bar after {restart_s:.1f} s, on {new_runner[0][0] if new_runner else '?'}")
    assert restart_s <= RESTART_BOUND_S
    assert new_runner and {r[0] for r in new_runner} == {survivor}
    assert max_runners == 1, "two runners of one feed at once"

    _stop_feed(cluster, inst)
    n = _assert_bars_contiguous(inst)
    assert n > bars_at_kill + 3
    fs = FeedStatus.objects.get(instrument_id=inst)
    assert fs.last_error == ""


@pytest.mark.slow
def test_frozen_runner_is_superseded_and_never_runs_twice(desk, cluster):
    inst = desk["instrument"].pk
    host, pid, task_id = _start_feed(cluster, inst)
    os.kill(pid, signal.SIGSTOP)  # the pool child freezes: no heartbeat, the lock expires after its TTL
    frozen_at = time.monotonic()
    try:
        replaced = _wait(lambda: [r for r in cluster.runners(inst) if r[1] != pid], LOCK_TTL + 25,
                         "a second runner after the lock expired")
        replaced_s = time.monotonic() - frozen_at
        bars = Candle.objects.filter(instrument_id=inst).count()
        _wait(lambda: Candle.objects.filter(instrument_id=inst).count() > bars + 2, 15, "bars from the new runner")
    finally:
        os.kill(pid, signal.SIGCONT)
    woke_at = time.monotonic()
    result = app.AsyncResult(task_id).get(timeout=15)
    stopped_s = time.monotonic() - woke_at
    print(f"\nfrozen runner replaced after {replaced_s:.1f} s by {replaced[0][:2]}; after SIGCONT the old one "
          f"returned {result!r} in {stopped_s:.2f} s")
    assert result == "superseded"
    assert [r[1] for r in cluster.runners(inst)] == [replaced[0][1]]
    time.sleep(1.5)
    assert FeedStatus.objects.get(instrument_id=inst).state == FeedStatus.State.CONNECTED  # not STOPPED
    _stop_feed(cluster, inst)
    _assert_bars_contiguous(inst)
