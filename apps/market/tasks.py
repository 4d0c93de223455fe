"""Market data tasks (queue `feeds`): history downloads. The feed runner lives in apps.runtime.tasks; its lock's
key and TTL stay here because feed liveness (apps.market.selectors) reads them, and market imports nothing
from the runtime."""

import logging

from celery import shared_task

log = logging.getLogger(__name__)
LOCK_TTL = 15  # seconds; the runner refreshes it every loop, so a dead runner frees it within this


def _lock_key(instrument_id: int) -> str:
    return f"feed-lock:{instrument_id}"


@shared_task(acks_late=False, soft_time_limit=3600, time_limit=3660)
def download_history_task(download_id: int) -> str:
    """Run one HistoryDownload (queued by the dashboard). Safe twice: a running or done row is left alone;
    a time limit or a network outage fails the row, and starting it again resumes from the stored candles."""
    from apps.market.history_services import history_download_run

    return history_download_run(download_id=download_id).state
