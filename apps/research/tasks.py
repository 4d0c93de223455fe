"""Research tasks on the `research` queue (settings CELERY_TASK_ROUTES), and the sweeper (beat).

trial_task IS acks_late (unlike the lab's run): a trial takes seconds and is idempotent (a claim token, a
deterministic result), so a worker lost mid-trial simply means the trial runs again: the pool's main process
re-queues it (reject_on_worker_lost), or the broker re-delivers it after its visibility timeout when the whole
worker died, or the sweeper dispatches it again. MAX_ATTEMPTS claims end a trial that kills its worker.
"""

from celery import shared_task

from apps.research.services import studies_sweep, study_step, trial_execute

TRIAL_SOFT_LIMIT_S = 600  # a trial over years of 1m bars takes tens of seconds; ten minutes is a hung one
TRIAL_HARD_LIMIT_S = 630


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=TRIAL_SOFT_LIMIT_S,
             time_limit=TRIAL_HARD_LIMIT_S, ignore_result=True)
def trial_task(trial_id: int) -> str | None:
    """Run one trial; a second delivery of a finished trial is a no-op."""
    trial = trial_execute(trial_id=trial_id)
    return None if trial is None else trial.status


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=240, time_limit=270, ignore_result=True)
def study_step_task(study_id: int) -> int:
    """Ask the next batches of a study (or finish it); idempotent. Returns the number of trials created."""
    return len(study_step(study_id=study_id))


@shared_task(ignore_result=True, soft_time_limit=50, time_limit=60)
def studies_sweep_task() -> list[int]:
    return studies_sweep()
