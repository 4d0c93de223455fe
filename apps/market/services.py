"""Writes for market data: bars and feed status."""

import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal

from django.db import connection, transaction
from django.db.models.constants import OnConflict

from apps.common.realtime import send_on_commit
from apps.market.events import FEEDS_GROUP, bar_payload, feed_payload
from apps.market.models import CANDLE_BAR_FIELDS, Candle, FeedStatus

# unknown is not zero: an OHLCV-only source has no taker split, a feed without liquidations no liq volume
_NULLABLE = {
    "taker_buy_volume",
    "taker_sell_volume",
    "whale_buy_volume",
    "whale_sell_volume",
    "liq_long_volume",
    "liq_short_volume",
}


def _dec(x) -> Decimal | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return Decimal(repr(float(x))).quantize(Decimal("0.0000000001"))


def _candle_values(bar: dict) -> dict:
    values = {}
    for field in CANDLE_BAR_FIELDS:
        v = _dec(bar.get(field))
        if v is None and field not in _NULLABLE:
            raise ValueError(f"bar {bar.get('open_time')} has no {field}")
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
    """Default desk for `make run`: BTC/USDT with a feed and one enabled ghost of every registered kind (paper).

    Re-run on every start: a kind added to the engine since the last start gets its ghost; existing ghosts,
    their params and on/off state are left as the operators set them.
    """
    from django.conf import settings

    from apps.engine.registry import GHOSTS
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
    present = set(Ghost.objects.filter(instrument=inst).values_list("kind", flat=True))
    for kind in GHOSTS:
        name = f"{kind.replace('_', '-')}-{inst.base.lower()}"
        if kind not in present and not Ghost.objects.filter(name=name).exists():
            ghost_create(name=name, kind=kind, instrument=inst, enabled=True)
    return f"{inst} feed={settings.HFT_FEED}, ghosts={Ghost.objects.filter(instrument=inst).count()}"


@dataclass(frozen=True)
class ImportReport:
    read: int  # rows in the frame
    stored: int  # new candles (rows already stored are not counted)
    skipped: dict[str, int] = dc_field(default_factory=dict)  # reason -> rows (bad values, duplicates in file)


_IMPORT_BATCH = 5000
_Q_PRICE = Decimal("0.0000000001")
_Q_QTY = Decimal("0.000000000001")


def _dec_column(values, quantum: Decimal) -> list[Decimal | None]:
    """floats -> Decimal via their shortest repr (what the file said), NaN -> None."""
    return [None if v != v else Decimal(repr(v)).quantize(quantum) for v in values.tolist()]


_IMPORT_FIELDS = (
    "instrument_id", "timeframe", "open_time", "open", "high", "low", "close",
    "volume", "taker_buy_volume", "taker_sell_volume", "trade_count",
)


def _float_column(s) -> list[float | None]:
    values = s.to_numpy(dtype="float64")
    return [None if v != v else v for v in values.tolist()]


def _taker_sell(volume: list, buy: list, *, as_float: bool) -> list:
    """volume - taker_buy in exact decimal arithmetic (a float subtraction leaves ...000005 tails)."""
    out = []
    for v, b in zip(volume, buy, strict=True):
        if b is None:
            out.append(None)
        elif as_float:
            out.append(float(Decimal(repr(v)) - Decimal(repr(b))))
        else:
            out.append(v - b)
    return out


def _time_column(s) -> list:
    """Aware UTC open times -> what the backend's adapt_datetimefield_value gives, vectorised for SQLite."""
    ops = connection.ops
    if connection.vendor == "sqlite":  # str() of the naive datetime in the connection's time zone
        naive = s.dt.tz_convert(connection.timezone).dt.tz_localize(None).dt.floor("us")
        return [str(t) for t in naive.dt.to_pydatetime().tolist()]
    return [ops.adapt_datetimefield_value(t) for t in s.dt.to_pydatetime().tolist()]


def _insert_ignore_sql() -> str:
    """INSERT of one Candle row that skips rows hitting a unique constraint (backend's own syntax)."""
    ops = connection.ops
    fields = [Candle._meta.get_field(n) for n in _IMPORT_FIELDS]
    columns = ", ".join(ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    suffix = ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)
    return (
        f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {ops.quote_name(Candle._meta.db_table)} "
        f"({columns}) VALUES ({placeholders}) {suffix}"
    ).rstrip()


def candles_import(*, instrument, frame, timeframe: str = "1m") -> ImportReport:
    """Bulk-store a standard candle frame (see apps.market.importers) idempotently.

    Bad rows are dropped and counted by reason (`importers.sanitize`); rows whose (instrument, timeframe,
    open_time) is already stored are left alone (what bulk_create(ignore_conflicts=True) does, but as one
    executemany per 5000 rows: the ORM's per-field preparation made 130k rows take ~25 s instead of ~2 s).
    taker_sell_volume is volume - taker_buy_volume, computed in Decimal, and NULL with it when the source has
    no taker split. No live push and no ghost evaluation: this is history, not a closing bar.
    """
    from apps.market.importers import sanitize

    clean, skipped = sanitize(frame)
    # SQLite keeps a DecimalField as REAL (NUMERIC affinity), so binding the floats stores the same value as
    # binding Decimal text, without a Python str() adapter call per value; other backends get Decimals.
    sqlite = connection.vendor == "sqlite"
    o, h, lo, c, volume, buy = (
        _float_column(clean[n]) if sqlite else _dec_column(clean[n].to_numpy(dtype="float64"), q)
        for n, q in (("open", _Q_PRICE), ("high", _Q_PRICE), ("low", _Q_PRICE), ("close", _Q_PRICE),
                     ("volume", _Q_QTY), ("taker_buy_volume", _Q_QTY))
    )
    sell = _taker_sell(volume, buy, as_float=sqlite)
    trades = clean["trade_count"].fillna(0).to_numpy(dtype="int64").tolist()
    times = _time_column(clean["open_time"])
    ident, tf = instrument.pk, timeframe
    rows = [(ident, tf, *values) for values in zip(times, o, h, lo, c, volume, buy, sell, trades, strict=True)]
    existing = Candle.objects.filter(instrument_id=instrument.pk, timeframe=timeframe)
    sql = _insert_ignore_sql()
    with transaction.atomic():
        before = existing.count()
        with connection.cursor() as cursor:
            for start in range(0, len(rows), _IMPORT_BATCH):
                cursor.executemany(sql, rows[start : start + _IMPORT_BATCH])
        after = existing.count()
    return ImportReport(read=len(frame), stored=after - before, skipped=skipped)
