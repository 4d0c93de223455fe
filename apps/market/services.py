"""Writes for market data: bars and feed status."""

import math
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal

from django.db import connection, transaction
from django.db.models.constants import OnConflict

from apps.alerts.services import alert_feed_state
from apps.common.realtime import send_on_commit
from apps.common.text import db_text
from apps.market.events import FEEDS_GROUP, bar_payload, feed_payload
from apps.market.markets import Markets
from apps.market.models import CANDLE_BAR_FIELDS, Candle, Exchange, FeedStatus, Instrument

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


PUSH_EVERY_BAR_UP_TO = 5
def candle_row(bar: dict) -> tuple:
    """A bar as candles_store_many stores it: (open_time, *CANDLE_BAR_FIELDS as Decimal or None, trade_count)."""
    v = _candle_values(bar)
    return (bar["open_time"], *(v[f] for f in CANDLE_BAR_FIELDS), v["trade_count"])


_STORE_MANY_FIELDS = ("instrument_id", "timeframe", "open_time", *CANDLE_BAR_FIELDS, "trade_count")


@transaction.atomic
def candles_store_many(*, instrument, bars: list[dict], timeframe: str = "1m") -> tuple[list[tuple], set]:
    """Store closed bars in bulk (a fast replay), idempotently like candle_store: a bar already stored is left as
    it is. Returns every bar as stored, (open_time, *CANDLE_BAR_FIELDS, trade_count) with Decimal values (None
    for unknown), and the open times of the new ones. One INSERT ... ON CONFLICT DO NOTHING executemany: the
    ORM's bulk_create spent ~120 us per row preparing fields."""
    if not bars:
        return [], set()
    times = [b["open_time"] for b in bars]
    stored = {row[0]: row for row in Candle.objects.filter(
        instrument_id=instrument.pk, timeframe=timeframe, open_time__gte=min(times), open_time__lte=max(times),
    ).values_list("open_time", *CANDLE_BAR_FIELDS, "trade_count")}
    adapt = connection.ops.adapt_datetimefield_value
    out, new_rows, new_times = [], [], set()
    for bar in bars:
        row = stored.get(bar["open_time"])
        if row is None:
            row = candle_row(bar)
            new_rows.append((instrument.pk, timeframe, adapt(bar["open_time"]), *row[1:]))
            new_times.add(bar["open_time"])
        out.append(row)
    if new_rows:
        ops = connection.ops
        fobjs = [Candle._meta.get_field(n) for n in _STORE_MANY_FIELDS]
        sql = (
            f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {ops.quote_name(Candle._meta.db_table)} "
            f"({', '.join(ops.quote_name(f.column) for f in fobjs)}) VALUES ({', '.join(['%s'] * len(fobjs))}) "
            f"{ops.on_conflict_suffix_sql(fobjs, OnConflict.IGNORE, None, None)}"
        ).rstrip()
        with connection.cursor() as cursor:
            cursor.executemany(sql, new_rows)
        # A paced replay (a few bars a step) draws every bar, as live does; a fast one its newest bar per step.
        fresh = sorted((r for r in out if r[0] in new_times), key=lambda r: r[0])
        for r in fresh if len(fresh) <= PUSH_EVERY_BAR_UP_TO else fresh[-1:]:
            send_on_commit(instrument.group_name, bar_payload(Candle(
                instrument_id=instrument.pk, timeframe=timeframe, open_time=r[0],
                **dict(zip(CANDLE_BAR_FIELDS, r[1:-1], strict=True)))))
    return out, new_times


@transaction.atomic
def feed_status_update(*, instrument_id: int, push: bool = True, **fields) -> FeedStatus:
    """Update the dashboard's view of one feed (state, last price/trade time, error, retry)."""
    fs = FeedStatus.objects.select_for_update().select_related("instrument").get(instrument_id=instrument_id)
    if "last_error" in fields:  # an exchange's answer or a file's line: NUL, a bad file name's byte, megabytes
        fields["last_error"] = db_text(fields["last_error"] or "")
    changed = [k for k, v in fields.items() if getattr(fs, k) != v]
    alert_feed_state(feed=fs, fields=fields)  # before the update: it alerts on the up -> down transition only
    for k in changed:
        setattr(fs, k, fields[k])
    if changed:
        fs.save(update_fields=[*changed, "updated_at"])
    if push:
        send_on_commit(FEEDS_GROUP, feed_payload(fs))
    return fs


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


# -- trade-level imports: aggTrades -> candles + large trades, liquidation and large-trade recordings ------
LIQ_RECORDER_GAP_MS = 5 * 60_000  # no event of ANY symbol for this long: the recorder was down (see below)


def instrument_ensure(*, exchange_code: str, symbol: str):
    """The Instrument, creating its exchange/instrument rows when missing (base/quote from the ccxt symbol)."""
    from apps.market.models import Exchange, Instrument

    names = {"binance": "Binance", "binanceusdm": "Binance USDT-M", "binancecoinm": "Binance COIN-M"}
    ex, _ = Exchange.objects.get_or_create(
        code=exchange_code, defaults={"name": names.get(exchange_code, exchange_code)}
    )
    from apps.market.markets import symbol_shape

    # the symbol's own shape (spot / swap / future, inverse, settle); the ccxt rules come with the markets lookup
    inst, _ = Instrument.objects.get_or_create(exchange=ex, symbol=symbol, defaults=symbol_shape(symbol))
    return inst


def _insert_ignore(model, fields: tuple[str, ...], rows: list[tuple], counted) -> int:
    """INSERT ... ON CONFLICT DO NOTHING of `rows` (values in `fields` order, already adapted), by executemany
    per 5000 rows; returns how many were new, counted on the `counted` queryset before and after."""
    ops = connection.ops
    fobjs = [model._meta.get_field(n) for n in fields]
    columns = ", ".join(ops.quote_name(f.column) for f in fobjs)
    suffix = ops.on_conflict_suffix_sql(fobjs, OnConflict.IGNORE, None, None)
    sql = (
        f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {ops.quote_name(model._meta.db_table)} "
        f"({columns}) VALUES ({', '.join(['%s'] * len(fobjs))}) {suffix}"
    ).rstrip()
    with transaction.atomic():
        before = counted.count()
        with connection.cursor() as cursor:
            for start in range(0, len(rows), _IMPORT_BATCH):
                cursor.executemany(sql, rows[start : start + _IMPORT_BATCH])
        return counted.count() - before


def _values(frame, name: str, quantum: Decimal) -> list:
    """A float column as the backend takes it: floats for SQLite (REAL affinity), Decimals elsewhere."""
    if connection.vendor == "sqlite":
        return _float_column(frame[name])
    return _dec_column(frame[name].to_numpy(dtype="float64"), quantum)


def _ms_times(ms) -> list:
    import pandas as pd

    return _time_column(pd.Series(pd.to_datetime(ms, unit="ms", utc=True)))


_BAR_FIELDS = (
    "instrument_id", "timeframe", "open_time", "open", "high", "low", "close", "volume", "taker_buy_volume",
    "taker_sell_volume", "trade_count", "whale_buy_volume", "whale_sell_volume", "liq_long_volume",
    "liq_short_volume",
)


def candles_from_trades_store(*, instrument, bars, timeframe: str = "1m") -> int:
    """Store the 1m bars built from trades (importers.bars_from_trades().bars) idempotently; returns how many
    were new. Every bar column is kept: exact taker split, trade count, whale volumes; liq volumes as given
    (NaN -> NULL: set from liquidation recordings by `candles_liquidations_apply`). No push, no ghosts."""
    cols = [_values(bars, n, _Q_PRICE if n in ("open", "high", "low", "close") else _Q_QTY)
            for n in _BAR_FIELDS[3:10] if n != "trade_count"]
    o, h, lo, c, vol, buy, sell = cols
    whale_b, whale_s, liq_l, liq_s = (_values(bars, n, _Q_QTY) for n in _BAR_FIELDS[11:])
    trades = bars["trades"].to_numpy(dtype="int64").tolist()
    times = _time_column(bars["open_time"])
    rows = [
        (instrument.pk, timeframe, *v)
        for v in zip(times, o, h, lo, c, vol, buy, sell, trades, whale_b, whale_s, liq_l, liq_s, strict=True)
    ]
    counted = Candle.objects.filter(instrument_id=instrument.pk, timeframe=timeframe)
    return _insert_ignore(Candle, _BAR_FIELDS, rows, counted)


def large_trades_store(*, instrument, trades, source: str) -> int:
    """Store trades (parsers_trades frame: ts_ms, price, amount, side, id) as LargeTrade rows, idempotent on
    (instrument, trade_id); returns how many were new. The caller decides which trades are large."""
    from apps.market.models import LargeTrade

    rows = list(zip(
        [instrument.pk] * len(trades), trades["id"].astype(str).tolist(), _ms_times(trades["ts_ms"]),
        trades["side"].tolist(), _values(trades, "price", _Q_PRICE), _values(trades, "amount", _Q_QTY),
        [source[:64]] * len(trades), strict=True,
    ))
    fields = ("instrument_id", "trade_id", "ts", "side", "price", "amount", "source")
    return _insert_ignore(LargeTrade, fields, rows, LargeTrade.objects.filter(instrument_id=instrument.pk))


def liquidations_store(*, instrument, events, source: str) -> int:
    """Store liquidation events (parsers_trades.read_liquidations rows of ONE symbol, sanitised) idempotently
    on (instrument, ts, side, price, amount); returns how many were new."""
    from apps.market.models import LiquidationEvent

    rows = list(zip(
        [instrument.pk] * len(events), _ms_times(events["ts_ms"]), events["side"].tolist(),
        _values(events, "price", _Q_PRICE), _values(events, "amount", _Q_QTY), [source[:64]] * len(events),
        strict=True,
    ))
    fields = ("instrument_id", "ts", "side", "price", "amount", "source")
    return _insert_ignore(LiquidationEvent, fields, rows, LiquidationEvent.objects.filter(instrument_id=instrument.pk))


def recording_segments(ts_ms, gap_ms: int = LIQ_RECORDER_GAP_MS) -> list[tuple[int, int]]:
    """[(first_ms, last_ms), ...] of a recording: its event times (ALL symbols) split where nothing arrived
    for more than `gap_ms`. Binance's !forceOrder@arr carries ~250 symbols; the real recordings' longest
    pause inside a session is under 1 minute, and their recorder outages last hours to days."""
    import numpy as np

    t = np.sort(np.asarray(ts_ms, dtype="int64"))
    if not len(t):
        return []
    cut = np.flatnonzero(np.diff(t) > gap_ms)
    starts = np.concatenate(([t[0]], t[cut + 1]))
    ends = np.concatenate((t[cut], [t[-1]]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def candles_liquidations_apply(*, instrument, segments: list[tuple[int, int]], timeframe: str = "1m") -> int:
    """Set liq_long_volume / liq_short_volume of the instrument's stored 1m candles in the minutes a liquidation
    recording covers, from ALL its stored LiquidationEvent rows (so overlapping recordings are not counted
    twice and re-applying changes nothing). Returns the number of candles set.

    Covered minutes: from the minute of a segment's first event to the minute of its last (`recording_segments`).
    Inside them a minute with no event for this instrument gets 0.0: the stream was up (other symbols' events
    arrived within minutes) and carried none for it. Outside them (before, after, recorder outages) the
    candles are left as they are (NULL = not known): no invented zeros. Binance sends at most one
    liquidation per symbol per second, so even a covered minute's volume is a lower bound, not a total.
    Only existing candles are touched: a recording makes no bars.
    """
    from datetime import UTC, datetime

    from apps.market.models import LiquidationEvent

    if timeframe != "1m" or not segments:
        return 0
    minute_ms = 60_000
    span = [datetime.fromtimestamp(x / 1000, tz=UTC) for x in (segments[0][0] - minute_ms, segments[-1][1] + minute_ms)]
    if not Candle.objects.filter(instrument_id=instrument.pk, timeframe=timeframe, open_time__range=span).exists():
        return 0  # one query for the many recorded symbols that have no candles
    total = 0
    for first_ms, last_ms in segments:
        lo, hi = first_ms // minute_ms * minute_ms, last_ms // minute_ms * minute_ms + minute_ms
        start, end = (datetime.fromtimestamp(x / 1000, tz=UTC) for x in (lo, hi))
        sums: dict[datetime, list[float]] = {}
        for ts, side, amount in LiquidationEvent.objects.filter(
            instrument_id=instrument.pk, ts__gte=start, ts__lt=end
        ).values_list("ts", "side", "amount"):
            key = ts.replace(second=0, microsecond=0)
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0 if side == LiquidationEvent.Side.LONG else 1] += float(amount)
        candles = list(Candle.objects.filter(
            instrument_id=instrument.pk, timeframe=timeframe, open_time__gte=start, open_time__lt=end
        ).values_list("pk", "open_time"))
        if not candles:
            continue
        values = [(pk, *sums.get(t, (0.0, 0.0))) for pk, t in candles]
        with transaction.atomic(), connection.cursor() as cursor:
            table, qn = Candle._meta.db_table, connection.ops.quote_name
            cursor.executemany(
                f"UPDATE {qn(table)} SET {qn('liq_long_volume')} = %s, {qn('liq_short_volume')} = %s "
                f"WHERE {qn('id')} = %s",
                [(_dec(lq), _dec(sh), pk) for pk, lq, sh in values],
            )
        total += len(values)
    return total


# -- instruments and their feeds, from the Instruments page (issue 11) ---------------------------------------
class InstrumentError(ValueError):
    """A refused instrument or feed change, with a message fit for the operator."""



@transaction.atomic
def instrument_add(*, exchange_code: str, symbol: str, actor) -> tuple[Instrument, bool]:
    """Add (or refresh) the instrument `symbol` of `exchange_code` from the exchange's cached ccxt markets, with
    its rules (tick, step, minimums, contract size). Returns (instrument, created). InstrumentError when the
    markets were never loaded or do not list the symbol."""
    from apps.audit.services import audit_record
    from apps.market.markets import MarketError, instrument_apply_market, markets_cached
    from apps.market.models import Exchange, Instrument

    exchange_code, symbol = (exchange_code or "").strip().lower(), (symbol or "").strip().upper()
    try:
        markets = markets_cached(exchange_code)
        if markets is None:
            raise MarketError(f"{exchange_code}'s markets are not loaded yet: load them first (Load markets, or "
                              f"`manage.py markets_fetch {exchange_code}`); they are kept for offline use")
        market = markets.market(symbol)
    except MarketError as exc:
        raise InstrumentError(str(exc)) from exc
    created = not Instrument.objects.filter(exchange__code=exchange_code, symbol=symbol).exists()
    inst = instrument_ensure(exchange_code=exchange_code, symbol=symbol)
    if created and not Exchange.objects.filter(code=exchange_code, instruments__isnull=False).exclude(
            instruments=inst).exists():
        _exchange_fees_from(inst.exchange, market)
    changed = instrument_apply_market(inst, market, precision_mode=markets.precision_mode)
    audit_record(actor=actor, action="instrument.added" if created else "instrument.rules_refreshed", obj=inst,
                 after={"exchange": exchange_code, "symbol": symbol, "changed": changed,
                        **{k: str(getattr(inst, k)) for k in ("market_type", "inverse", "settle", "contract_size",
                                                              "price_tick", "amount_step", "min_amount",
                                                              "min_notional")},
                        "markets_fetched_at": markets.fetched_at.isoformat()})
    return inst, created


def _exchange_fees_from(exchange: Exchange, market: dict) -> None:
    """A new exchange row takes the market's taker/maker fee from ccxt (its default tier) instead of 0.1 %."""
    fields = []
    for attr, key in (("taker_fee", "taker"), ("maker_fee", "maker")):
        v = _dec(market.get(key))
        if v is not None and 0 <= v < 1:
            setattr(exchange, attr, v.quantize(Decimal("0.000001")))
            fields.append(attr)
    if fields:
        exchange.save(update_fields=fields)


@transaction.atomic
def instruments_rules_refresh(*, exchange_code: str, markets: Markets | None = None) -> list[str]:
    """After a markets load: every instrument of the exchange that its markets list gets their current rules (an
    exchange changes ticks and minimums now and then), audited when something changed. Instruments the markets no
    longer list are left as they are (and named in the log). Returns the instruments that changed."""
    import logging

    from apps.audit.services import audit_record
    from apps.market.markets import MarketError, instrument_apply_market, markets_cached
    from apps.market.models import Instrument

    markets = markets or markets_cached(exchange_code)
    if markets is None:
        return []
    changed = []
    for inst in Instrument.objects.select_related("exchange").filter(exchange__code=exchange_code).order_by("id"):
        try:
            fields = instrument_apply_market(inst, markets.market(inst.symbol), precision_mode=markets.precision_mode)
        except MarketError as exc:
            logging.getLogger(__name__).warning("%s: rules not refreshed: %s", inst, exc)
            continue
        if fields:
            audit_record(actor=None, action="instrument.rules_refreshed", obj=inst,
                         after={"changed": {k: str(getattr(inst, k)) for k in fields},
                                "markets_fetched_at": markets.fetched_at.isoformat()})
            changed.append(str(inst))
    return changed
