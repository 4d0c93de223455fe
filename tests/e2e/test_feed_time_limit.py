"""A feed runs for as long as the desk does: the workers' default task time limit (settings: 300 s soft, 330 s hard)
must not apply to it. Under `make run` every runner was killed after 5 minutes (SoftTimeLimitExceeded, then the
hard limit's SIGKILL of the pool process) and restarted by the supervisor: a task's None limit is filled from those
settings when Celery binds it (`Task.from_config`; the worker's --time-limit options do not reach such a task). Here
the worker's settings cut the default to 2 s soft / 32 s hard (HFT_TASK_SOFT_TIME_LIMIT), and a sim feed asked to
run for 8 s must still run to its own clean stop, with no time limit in the worker's log."""

import pytest

from apps.market.feed_services import RUN_FEED_TASK
from apps.market.models import FeedStatus
from hftweb.celery import app
from tests.e2e.procs import foreign_workers, proc_kill, wait_until, worker_log, worker_start

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def short_limit_worker(redis_url):
    proc = worker_start("feed-limit", queues="feeds", concurrency=1, env={"HFT_TASK_SOFT_TIME_LIMIT": "2"})
    try:
        others = foreign_workers({proc.worker_name})
        assert not others, f"other Celery workers share this broker and would take the feed: {others}"
        yield proc
    finally:
        proc_kill(proc)


def test_a_feed_outlives_the_workers_default_time_limit(desk, short_limit_worker):
    inst = desk["instrument"]
    # By name, as the Instruments page's start sends it: no time limits in the message, so the worker's own binding
    # of the task decides (run_feed.delay here would carry this process's binding in the message's header).
    app.send_task(RUN_FEED_TASK, args=[inst.pk], kwargs={"max_seconds": 8, "speed": 600})
    wait_until(lambda: FeedStatus.objects.get(instrument=inst).state == FeedStatus.State.CONNECTED, 60,
               "the sim feed to connect")
    wait_until(lambda: FeedStatus.objects.get(instrument=inst).state != FeedStatus.State.CONNECTED, 60,
               "the feed to end")
    fs = FeedStatus.objects.get(instrument=inst)
    log = worker_log(short_limit_worker)
    assert "time limit" not in log.lower(), log[-3000:]
    assert fs.state == FeedStatus.State.STOPPED, (fs.state, fs.last_error, log[-3000:])
