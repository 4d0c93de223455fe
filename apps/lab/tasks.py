"""Lab tasks: the run itself on the `research` queue (settings CELERY_TASK_ROUTES), and the sweeper (beat).

lab_run_task is NOT acks_late: a worker lost mid-run leaves the run "running" until the sweeper marks it
failed and a person re-queues it (apps.lab.services, module docstring). Its time limits are its own: a run
over years of 1m bars takes minutes, far past the desk's 300 s default for short tasks.
"""

from celery import shared_task

from apps.lab.services import lab_run_execute, lab_runs_sweep

RUN_SOFT_LIMIT_S = 3600
RUN_HARD_LIMIT_S = 3660


@shared_task(acks_late=False, soft_time_limit=RUN_SOFT_LIMIT_S, time_limit=RUN_HARD_LIMIT_S, ignore_result=True)
def lab_run_task(run_id: int) -> str:
    """Execute one queued run; a second delivery of the same run is a no-op (the claim is conditional)."""
    return lab_run_execute(run_id=run_id).status


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def lab_runs_sweep_task() -> list[int]:
    return lab_runs_sweep()
