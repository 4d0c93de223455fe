"""Reads for the Instruments page (issue 11): the desk's instruments with their ccxt rules and feeds, and the
exchanges whose ccxt markets are cached (apps.market.markets)."""

from dataclasses import dataclass
from datetime import datetime

from apps.market.markets import markets_cache_path, markets_cached
from apps.market.models import FeedStatus, Instrument
from apps.market.selectors import feed_liveness_mark


@dataclass(frozen=True)
class CachedMarkets:
    exchange: str
    fetched_at: datetime
    count: int


def markets_cache_list() -> list[CachedMarkets]:
    """Every exchange with a markets cache file, newest fetch first."""
    folder = markets_cache_path("binance").parent
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        got = markets_cached(path.stem)
        if got is not None:
            out.append(CachedMarkets(exchange=got.exchange, fetched_at=got.fetched_at, count=len(got.symbols())))
    return sorted(out, key=lambda c: c.fetched_at, reverse=True)


def market_symbols(exchange_code: str) -> list[str]:
    """The addable symbols of an exchange's cached markets ([] when none are cached)."""
    try:
        got = markets_cached(exchange_code)
    except ValueError:  # not an exchange id (MarketError): nothing to list
        return []
    return got.symbols() if got is not None else []


def instruments_with_feeds() -> list[Instrument]:
    """Instruments in id order, each with `.feed` (its FeedStatus with liveness marked, or None)."""
    rows = list(Instrument.objects.select_related("exchange").order_by("id"))
    feeds = {fs.instrument_id: fs for fs in FeedStatus.objects.filter(instrument__in=rows)}
    feed_liveness_mark(feeds.values())
    for inst in rows:
        inst.feed = feeds.get(inst.pk)
    return rows
