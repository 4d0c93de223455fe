from datetime import datetime

from celery import shared_task

from apps.ghosts.evaluation import bar_evaluate


@shared_task(acks_late=True, reject_on_worker_lost=True, soft_time_limit=50, time_limit=60)
def evaluate_bar(instrument_id: int, bar_time_iso: str) -> list[int]:
    """Safe to run twice (signals are unique per ghost and bar; execution only from PENDING)."""
    signals = bar_evaluate(instrument_id=instrument_id, bar_time=datetime.fromisoformat(bar_time_iso))
    return [s.pk for s in signals]
