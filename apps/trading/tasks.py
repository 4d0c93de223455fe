"""Trading tasks run by beat. Thin: the rules live in apps.trading.risk_services."""

from celery import shared_task

from apps.trading.risk_services import risk_watch


@shared_task(ignore_result=True, soft_time_limit=20, time_limit=30)
def risk_watch_task() -> str | None:
    """Trip the kill switch when today's loss (realised + unrealised) reached the daily limit, even while no
    ghost is deciding anything (the manager also checks before each decision). Idempotent: a tripped switch
    stays as it is. Returns the reason when it tripped now."""
    return risk_watch()
