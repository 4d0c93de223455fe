"""Loading an exchange's ccxt markets in a worker (queue `default`), asked for by the Instruments page. Listed in
CELERY_IMPORTS (autodiscovery only reads tasks.py)."""

from celery import shared_task

from apps.market.markets import MarketError, markets_fetch, markets_fetch_state_set


@shared_task(name="apps.market.markets_tasks.markets_fetch_task", soft_time_limit=120, time_limit=150,
             ignore_result=True)
def markets_fetch_task(exchange_code: str) -> str:
    """Fetch and cache, then refresh the rules of the exchange's instruments; the outcome is kept for the page
    (apps.market.markets.markets_fetch_state). Safe twice."""
    markets_fetch_state_set(exchange_code, "loading")
    try:
        got = markets_fetch(exchange_code)
    except MarketError as exc:
        markets_fetch_state_set(exchange_code, "failed", error=str(exc))
        return f"failed: {exc}"
    from apps.market.services import instruments_rules_refresh

    refreshed = instruments_rules_refresh(exchange_code=exchange_code, markets=got)
    markets_fetch_state_set(exchange_code, "done", count=len(got.symbols()), refreshed=refreshed)
    return f"{len(got.symbols())} markets; rules changed on {len(refreshed)} instruments"
