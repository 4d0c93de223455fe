"""Ctrl-C on `make run` stops the celery workers without WorkerLostError tracebacks (issue 14, rough edges).

devrun's own Child supervises a real celery worker (a tiny app in tmp_path, real Redis) running a task that never
ends, as the feed runner does; Child.stop() then reap() is what devrun does on Ctrl-C. The contrast case sends
SIGTERM to the whole group as devrun used to, which printed a WorkerLostError traceback per running task.
"""

import os
import signal
import sys
import time

import pytest

from hftweb import devrun

APP = """
import os, time
from celery import Celery
app = Celery("forever", broker=os.environ.get("O_BROKER"))
@app.task(acks_late=False)
def forever(marker):
    open(marker, "w").close()  # started (the received/succeeded log lines are hidden by the settings' LOGGING)
    while True:
        time.sleep(0.1)
"""


def run_then_stop(tmp_path, broker: str, capfd, *, old_way: bool) -> tuple[str, float]:
    (tmp_path / "forever.py").write_text(APP)
    env = {**os.environ, "O_BROKER": broker, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    cmd = [str(devrun.BIN / "celery"), "-A", "forever", "worker", "-c", "2", "-l", "info", "-n", f"o{os.getpid()}@%h"]
    child = devrun.Child("worker", cmd, env=env)
    child.start()
    sys.path.insert(0, str(tmp_path))
    try:
        import forever

        forever.app.conf.broker_url = broker
        marker = tmp_path / "started"
        forever.forever.delay(str(marker))
        deadline, seen = time.monotonic() + 30, ""
        while not marker.exists():
            assert time.monotonic() < deadline and child.proc.poll() is None, seen
            time.sleep(0.2)
            seen += capfd.readouterr().out
        time.sleep(1)  # the pool child is inside the task now
        started = time.monotonic()
        if old_way:
            child.signal(signal.SIGTERM)
        else:
            child.stop()
        child.reap()
        took = time.monotonic() - started
        time.sleep(0.3)  # the pump thread drains the last lines
        return seen + capfd.readouterr().out, took
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("forever", None)
        if child.proc.poll() is None:
            child.signal(signal.SIGKILL)
            child.proc.wait()


@pytest.mark.parametrize("old_way", [False, True], ids=["devrun-stop", "group-sigterm-as-before"])
def test_stopping_a_busy_worker_prints_no_worker_lost_traceback(tmp_path, redis_url, capfd, old_way):
    broker = redis_url.rsplit("/", 1)[0] + "/11"
    out, took = run_then_stop(tmp_path, broker, capfd, old_way=old_way)
    assert "devrun: worker stopped" in out, out
    if old_way:  # the noise this fixes, so the check below can fail
        assert "WorkerLostError" in out and "Traceback" in out
    else:
        assert "Cold shutdown" in out, out
        assert "WorkerLostError" not in out and "Traceback" not in out, out
        assert took < 15, f"stopping took {took:.1f} s"  # no warm shutdown waiting on a task that never ends
