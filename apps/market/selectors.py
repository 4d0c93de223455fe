from datetime import datetime

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Max, QuerySet
from django.utils import timezone

from apps.engine.types import BAR_COLUMNS
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


def candle_bars(*, instrument_id: int, until, minutes: int, timeframe: str = "1m") -> pd.DataFrame:
    """The window a ghost sees when evaluating the bar opened at `until`, as the engine's bars frame
    (float64 columns, UTC open-time index, NULL -> NaN): at most `minutes` bars, oldest first.

    One SQL query read straight into numpy: the ORM's Candle objects and Decimal conversions cost ~20x
    more, and with the trend gate the live window is ~12,000 bars per evaluation.
    """
    table = Candle._meta.db_table
    qn = connection.ops.quote_name
    cols = ["open_time", *CANDLE_BAR_FIELDS, "trade_count"]
    sql = (
        f"SELECT {', '.join(qn(Candle._meta.get_field(c).column) for c in cols)} FROM {qn(table)} "
        f"WHERE {qn('instrument_id')} = %s AND {qn('timeframe')} = %s AND {qn('open_time')} <= %s "
        f"ORDER BY {qn('open_time')} DESC LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [instrument_id, timeframe, connection.ops.adapt_datetimefield_value(until), minutes])
        rows = cursor.fetchall()
    rows.reverse()
    if not rows:
        return pd.DataFrame(columns=list(BAR_COLUMNS), index=pd.DatetimeIndex([], tz="UTC", name="open_time"),
                            dtype="float64")
    times, *values = zip(*rows, strict=True)
    index = pd.DatetimeIndex(pd.to_datetime(list(times), utc=True), name="open_time")
    data = {c: np.array(v, dtype=np.float64) for c, v in zip(cols[1:], values, strict=True)}
    data["trades"] = data.pop("trade_count")
    return pd.DataFrame(data, index=index)[list(BAR_COLUMNS)]
