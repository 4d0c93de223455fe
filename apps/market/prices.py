"""Cross-process hot state in Redis (via the Django cache): the last trade price per instrument and a
version counter of open positions, so a feed knows when to reload its stop/target cache."""

from django.core.cache import cache


def price_set(instrument_id: int, price: float, ts_ms: int) -> None:
    cache.set(f"last-price:{instrument_id}", (price, ts_ms), timeout=3600)


def price_get(instrument_id: int) -> tuple[float, int] | None:
    return cache.get(f"last-price:{instrument_id}")


def positions_version(instrument_id: int) -> int:
    return cache.get(f"positions-version:{instrument_id}", 0)


def positions_changed(instrument_id: int) -> None:
    key = f"positions-version:{instrument_id}"
    cache.add(key, 0, timeout=None)
    cache.incr(key)
