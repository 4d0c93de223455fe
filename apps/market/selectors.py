import logging
from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd
from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet
from django.db.models.query import ModelIterable
from django.utils import timezone

from apps.common.clock import desk_now  # noqa: F401 - the desk's clock, re-exported for its many readers
from apps.engine.types import BAR_COLUMNS
from apps.market.models import CANDLE_BAR_FIELDS, Candle, FeedStatus, Instrument

log = logging.getLogger(__name__)


# Feed liveness. A feed in one of these states has a runner that renews its Redis lock (apps.market.tasks) every
# loop; when the lock has lapsed the runner is gone (its worker died or froze) or Redis is, whatever the stored state
# still says. Pages and state.json then show the feed as DOWN, with how long ago its last trade was.
FEED_RUNNING_STATES = frozenset({FeedStatus.State.STARTING, FeedStatus.State.CONNECTED, FeedStatus.State.LAGGING,
                                 FeedStatus.State.RECONNECTING})
FEED_DOWN = "down"


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def feed_liveness_mark(statuses: Iterable[FeedStatus], *, now: datetime | None = None) -> None:
    """Mark, in memory and for display only (never saved), each feed whose runner's heartbeat has lapsed: its
    `state` becomes "down", `last_error` says why and how long ago the last trade was, `heartbeat_lapsed` is True,
    `silent_s` the seconds since that trade (wall time: a live trade's own time; for sim and replay, whose trades
    carry data time, when the feed last reported) and `stored_state` keeps the stored state.

    A row written less than the lock's TTL ago is left alone while Redis answers (a feed the supervisor has just
    been asked to start has no runner yet). Redis unreachable: every running feed is down (no runner can beat)."""
    from apps.market.tasks import LOCK_TTL, _lock_key  # tasks import services, which import this module's users

    running = [fs for fs in statuses if fs.state in FEED_RUNNING_STATES]
    if not running:
        return
    now = now or timezone.now()
    try:
        held = cache.get_many([_lock_key(fs.instrument_id) for fs in running])
        reason = "no heartbeat from its runner (its worker died or is stuck)"
    except Exception as exc:  # redis-py's ConnectionError/TimeoutError: say so rather than fail the page
        log.warning("feed liveness unknown, Redis unreachable: %s", exc)
        held, reason = None, "Redis unreachable, so no runner can beat"
    for fs in running:
        just_written = (now - fs.updated_at).total_seconds() < LOCK_TTL
        if held is not None and (_lock_key(fs.instrument_id) in held or just_written):
            continue
        last_trade_wall = fs.last_trade_at if fs.source == "live" and fs.last_trade_at else fs.updated_at
        fs.silent_s = max(0, int((now - last_trade_wall).total_seconds()))
        trade = f"last trade {_ago(fs.silent_s)} ago" if fs.last_trade_at else "no trade yet"
        fs.stored_state, fs.state, fs.heartbeat_lapsed = fs.state, FEED_DOWN, True
        fs.last_error = f"down: {reason}; {trade}" + (f". Last error: {fs.last_error}" if fs.last_error else "")


class FeedStatusQuerySet(QuerySet):
    """Feed rows for pages and state.json: rows whose runner stopped beating read as down (feed_liveness_mark)."""

    def _fetch_all(self) -> None:
        fresh = self._result_cache is None
        super()._fetch_all()
        if fresh and self._iterable_class is ModelIterable:
            feed_liveness_mark(self._result_cache)


def feed_statuses() -> QuerySet[FeedStatus]:
    """Every feed for display, with its liveness (a lapsed heartbeat shows as down): read-only rows, never save them."""
    return FeedStatusQuerySet(FeedStatus).select_related("instrument__exchange").order_by("instrument_id")


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
