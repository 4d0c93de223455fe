"""Trading tasks run by beat, and the worker's start-up reconciliation. Thin: the rules live in
apps.trading.risk_services and apps.trading.live_reconcile."""

from celery import shared_task
from celery.signals import worker_ready

from apps.trading.live_reconcile import live_startup
from apps.trading.risk_services import risk_watch


@shared_task(ignore_result=True, soft_time_limit=20, time_limit=30)
def risk_watch_task() -> str | None:
    """Trip the kill switch when today's loss (realised + unrealised) reached the daily limit, even while no
    ghost is deciding anything (the manager also checks before each decision). Idempotent: a tripped switch
    stays as it is. Returns the reason when it tripped now."""
    return risk_watch()


def _on_worker_ready(**kwargs) -> None:
    live_startup()


# Every worker imports this module (Celery's autodiscovery of apps.*.tasks), so every worker reconciles live
# trading when it starts, whichever queues it consumes; the dispatch uid keeps it to one call per start.
worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="hftweb-live-reconcile")
