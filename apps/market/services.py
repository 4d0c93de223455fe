"""Writes for market data: bars and feed status."""

import math
from decimal import Decimal

from django.db import transaction

from apps.common.realtime import send_on_commit
from apps.market.events import FEEDS_GROUP, bar_payload, feed_payload
from apps.market.models import Candle, FeedStatus

# bar-builder column -> Candle field
_FIELDS = {
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "taker_buy_volume": "taker_buy_volume",
    "taker_sell_volume": "taker_sell_volume",
    "whale_buy_volume": "whale_buy_volume",
    "whale_sell_volume": "whale_sell_volume",
    "liq_long_volume": "liq_long_volume",
    "liq_short_volume": "liq_short_volume",
}
_NULLABLE = {"whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume"}


def _dec(x) -> Decimal | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return Decimal(repr(float(x))).quantize(Decimal("0.0000000001"))


def _candle_values(bar: dict) -> dict:
    values = {}
    for key, field in _FIELDS.items():
        v = _dec(bar.get(key))
        if v is None and field not in _NULLABLE:
            raise ValueError(f"bar {bar.get('open_time')} has no {key}")
        values[field] = v
    values["trade_count"] = int(bar.get("trades") or 0)
    return values


@transaction.atomic
def candle_store(
    *, instrument_id: int, bar: dict, timeframe: str = "1m", on_stored=None
) -> tuple[Candle, bool]:
    """Store one closed bar idempotently (unique on instrument, timeframe, open time).

    `on_stored(candle)` runs after commit, only when the bar is new: that is where the feed hands the
    bar to the ghosts, so a bar seen twice is evaluated once.
    """
    candle, created = Candle.objects.get_or_create(
        instrument_id=instrument_id,
        timeframe=timeframe,
        open_time=bar["open_time"],
        defaults=_candle_values(bar),
    )
    if created:
        send_on_commit(candle.instrument.group_name, bar_payload(candle))
        if on_stored is not None:
            transaction.on_commit(lambda: on_stored(candle))
    return candle, created


@transaction.atomic
def feed_status_update(*, instrument_id: int, push: bool = True, **fields) -> FeedStatus:
    """Update the dashboard's view of one feed (state, last price/trade time, error, retry)."""
    fs = FeedStatus.objects.select_for_update().select_related("instrument").get(instrument_id=instrument_id)
    changed = [k for k, v in fields.items() if getattr(fs, k) != v]
    for k in changed:
        setattr(fs, k, fields[k])
    if changed:
        fs.save(update_fields=[*changed, "updated_at"])
    if push:
        send_on_commit(FEEDS_GROUP, feed_payload(fs))
    return fs


@transaction.atomic
def desk_ensure() -> str:
    """Default desk for `make run`: an instrument with a feed and one enabled spike fader (paper)."""
    from django.conf import settings

    from apps.ghosts.models import Ghost
    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, Instrument

    ex, _ = Exchange.objects.get_or_create(code="binance", defaults={"name": "Binance"})
    inst, _ = Instrument.objects.get_or_create(
        exchange=ex, symbol="BTC/USDT", defaults={"base": "BTC", "quote": "USDT"}
    )
    fs, _ = FeedStatus.objects.get_or_create(instrument=inst, defaults={"source": settings.HFT_FEED})
    if fs.state == FeedStatus.State.STOPPED or fs.source != settings.HFT_FEED:
        fs.state, fs.source = FeedStatus.State.STARTING, settings.HFT_FEED
        fs.save(update_fields=["state", "source", "updated_at"])
    if not Ghost.objects.filter(instrument=inst).exists():
        ghost_create(name="spike-fader-btc", kind="spike_fader", instrument=inst, enabled=True)
    return f"{inst} feed={settings.HFT_FEED}, ghosts={Ghost.objects.filter(instrument=inst).count()}"
