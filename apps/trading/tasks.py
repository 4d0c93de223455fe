"""Trading tasks run by beat, and the worker's start-up reconciliation. Thin: the rules live in
apps.trading.risk_services, apps.trading.live_watch and apps.trading.live_reconcile."""

from celery import shared_task
from celery.signals import worker_ready

from apps.trading.live_reconcile import live_startup
from apps.trading.live_watch import protect_watch
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


# expires (settings: below the 30 s interval) drops a run that waited in the queue behind another: the next one
# comes anyway. Hard limit 50 s < the watch's 55 s lock, so a killed run's lock lapses before the next-but-one.
@shared_task(ignore_result=True, soft_time_limit=40, time_limit=50)
def protect_watch_task() -> dict[str, int]:
    """Check every live position's protective stop on the exchange (apps.trading.live_watch)."""
    return protect_watch()
