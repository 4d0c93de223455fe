"""Real Celery worker and beat processes for the fault and crash-safety tests (tests/e2e/test_faults.py,
tests/e2e/test_crash_safety.py, tests/lab/test_worker.py, tests/research/test_worker.py).

Each process is its own session leader (start_new_session), so a test can SIGKILL one whole worker, main
process and pool children together, the way an OOM kill or a lost container takes it, with os.killpg.

Crash points (tests/e2e/crashpoints.py and the lab's and research's): crash_point_arm names one in Redis, the first
worker process to reach it holds it (inside its open transaction) and says so; crash_point_wait returns that
process's pid, and worker_kill_at SIGKILLs it, or its whole worker, at that moment.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import ROOT, _subprocess_env
from tests.e2e.crashpoints import ARM_KEY, HIT_KEY

WORKER_FLAGS = ["-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]



def wait_until(cond, timeout: float, what: str, step: float = 0.3):
    """Poll `cond` until it returns something truthy (returned), or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

def worker_start(name: str, *, queues: str, concurrency: int, env: dict | None = None,
                 wait: bool = True) -> subprocess.Popen:
    """A prefork worker named `<name>@hft-test`; returns once it answers a ping (60 s at most), or at once
    with wait=False (then call worker_wait: several workers start in parallel)."""
    log = tempfile.NamedTemporaryFile(prefix=f"worker-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "hftweb", "worker", "-n", f"{name}@hft-test", "-Q", queues,
         "-c", str(concurrency), *WORKER_FLAGS],
        cwd=ROOT, env={**_subprocess_env(), **(env or {})}, start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT,
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    proc.worker_name = f"{name}@hft-test"  # type: ignore[attr-defined]
    if wait:
        worker_wait(proc)
    return proc


def worker_wait(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the worker answers a ping; a worker that exits or stays silent is killed and its log shown."""
    from hftweb.celery import app

    deadline = time.monotonic() + timeout
    while not app.control.ping(destination=[proc.worker_name], timeout=0.5):  # type: ignore[attr-defined]
        if proc.poll() is not None or time.monotonic() > deadline:
            proc_kill(proc)
            tail = worker_log(proc)[-3000:]
            raise RuntimeError(f"celery worker {proc.worker_name} did not come up (rc {proc.returncode}):\n{tail}")


def worker_log(proc: subprocess.Popen) -> str:
    """What a worker started by worker_start printed (its warnings: lost pool processes, restored messages)."""
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def beat_start(workdir: Path) -> subprocess.Popen:
    """celery beat with the file scheduler (the desk's CELERY_BEAT_SCHEDULE; no database rows needed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "hftweb", "beat", "-S", "celery.beat:PersistentScheduler",
         "-s", str(workdir / "beat-schedule"), "--pidfile", str(workdir / "beat.pid"), "-l", "warning"],
        cwd=ROOT, env=_subprocess_env(), start_new_session=True,
    )


def proc_kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a process started here (worker main + pool children) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def group_pids(proc: subprocess.Popen, wait_s: float = 0.0) -> set[int]:
    """Pids still alive (zombies excluded) in the process group of `proc`, pool children included; with
    `wait_s`, waits up to that long for the group to die out (killed orphans are reaped by init)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat="], capture_output=True, text=True, check=True)
        rows = (line.split() for line in out.stdout.splitlines())
        alive = {int(p) for p, g, st in rows if int(g) == proc.pid and not st.startswith("Z")}
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def foreign_workers(mine: set[str]) -> list[str]:
    """Workers answering a ping that the test did not start (e.g. the session's `celery_workers`); they
    would take tasks meant for the workers under test, so the tests refuse to run beside them."""
    from hftweb.celery import app

    replies = app.control.ping(timeout=1.0) or []
    return [name for r in replies for name in r if name not in mine]


def _redis():
    import redis

    return redis.Redis.from_url(os.environ["REDIS_URL"])


def crash_point_arm(point: str) -> None:
    """Arm `point`: the first worker process that reaches it holds it until killed (tests/e2e/crashpoints.py)."""
    r = _redis()
    r.delete(HIT_KEY)
    r.set(ARM_KEY, point)


def crash_point_disarm() -> None:
    """In a test's finally: an armed point nobody reached must not catch a later test's worker."""
    _redis().delete(ARM_KEY)


def crash_point_wait(point: str, worker: subprocess.Popen | None = None, timeout: float = 60) -> int:
    """The pid of the process holding `point` once one reaches it; the worker's log tail when none does."""
    r = _redis()
    deadline = time.monotonic() + timeout
    while not (hit := r.get(HIT_KEY)):
        if time.monotonic() > deadline:
            log = worker_log(worker)[-3000:] if worker is not None else ""
            raise AssertionError(f"crash point {point!r} not reached within {timeout} s\n{log}")
        time.sleep(0.05)
    name, pid = hit.decode().rsplit(":", 1)
    assert name == point, f"crash point {name!r} reached, {point!r} armed"
    return int(pid)


def worker_kill_at(worker: subprocess.Popen, pid: int, how: str) -> None:
    """SIGKILL at a held crash point. how="child": only the pool process `pid` (it must be one of the worker's; the
    worker's main process sees a lost child and carries on); how="worker": the worker's whole process group, as an
    OOM kill or a lost host takes it, returning once none of it is left."""
    if how == "child":
        assert pid in group_pids(worker), f"pid {pid} is not a process of worker {worker.pid}"
        os.kill(pid, signal.SIGKILL)
        return
    assert how == "worker", how
    proc_kill(worker)
    assert not group_pids(worker, wait_s=5), "processes of the killed worker are still alive"
