from datetime import datetime

from django.db.models import Max, QuerySet
from django.utils import timezone

from apps.market.models import CANDLE_BAR_FIELDS, Candle, FeedStatus, Instrument


def desk_now() -> datetime:
    """The desk's clock: data time of the newest trade any feed has seen (wall time when none).

    Sim and replay run faster than the wall clock; "today" on the dashboard is the data's today,
    so P&L days line up with the fills' own timestamps. Live, the two are the same.
    """
    latest = FeedStatus.objects.aggregate(t=Max("last_trade_at"))["t"]
    return latest or timezone.now()


def feed_statuses() -> QuerySet[FeedStatus]:
    return FeedStatus.objects.select_related("instrument__exchange").order_by("instrument_id")


def instruments() -> QuerySet[Instrument]:
    return Instrument.objects.select_related("exchange").order_by("id")


def last_prices() -> dict[int, float]:
    return {fs.instrument_id: float(fs.last_price) for fs in FeedStatus.objects.exclude(last_price=None)}


def recent_candles(*, instrument_id: int, limit: int = 240, timeframe: str = "1m") -> list[Candle]:
    rows = list(
        Candle.objects.filter(instrument_id=instrument_id, timeframe=timeframe).order_by("-open_time")[:limit]
    )
    rows.reverse()
    return rows


def last_candle(*, instrument_id: int, timeframe: str = "1m") -> Candle | None:
    return (
        Candle.objects.filter(instrument_id=instrument_id, timeframe=timeframe).order_by("-open_time").first()
    )


def candle_window(*, instrument_id: int, until, minutes: int, timeframe: str = "1m") -> list[Candle]:
    """The bars a ghost sees when evaluating the bar opened at `until`: at most `minutes` of them, oldest first."""
    rows = list(
        Candle.objects.filter(
            instrument_id=instrument_id, timeframe=timeframe, open_time__lte=until
        ).order_by("-open_time")[:minutes]
    )
    rows.reverse()
    return rows


def candles_as_bar_records(candles: list[Candle]) -> list[dict]:
    """Candles as the engine's bar records: floats, NULL (unknown) -> NaN, trade_count -> trades."""
    out = []
    for c in candles:
        rec = {"open_time": c.open_time, "trades": float(c.trade_count)}
        for field in CANDLE_BAR_FIELDS:
            v = getattr(c, field)
            rec[field] = float("nan") if v is None else float(v)
        out.append(rec)
    return out
