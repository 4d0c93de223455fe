"""Reads of the trade history (one row per position) at any size: keyset pages and the CSV export.

Newest first on (opened_at, id). A page never counts the table and never offsets into it: it asks for the 51
rows past a cursor (apps.common.keyset), which the indexes on trading_position (opened_at, id) and
(ghost | instrument | side | status, opened_at, id) answer as a range read whatever the table's size
(tests/dashboard/test_trades_explain.py checks the plans). The CSV walks the same order in keyset batches of the
values_list query's plain rows (no model instances, no re-sort), tens of thousands of rows a second.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections
from django.db.models import F, Q, QuerySet, TextField
from django.db.models.functions import Cast

from apps.common.keyset import Cursor, KeysetPage, keyset_page, older_than
from apps.trading.models import Position

PAGE_SIZE = 50  # rows per page: one screen on a laptop, cheap to render
EXPORT_BATCH = 5000  # rows per export query: big enough to amortise the query, small enough to stream


@dataclass(frozen=True)
class TradeFilter:
    """The trades page's filters. outcome: win | loss | open (win/loss are net of fees)."""

    ghost_id: int | None = None
    instrument_id: int | None = None
    side: str | None = None
    outcome: str | None = None
    date_from: date | None = None  # UTC days, both ends included
    date_to: date | None = None


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def trades_filtered(filters: TradeFilter) -> QuerySet[Position]:
    """Every position the filters keep, unordered (callers order and bound it)."""
    qs = Position.objects.all()
    if filters.ghost_id:
        qs = qs.filter(ghost_id=filters.ghost_id)
    if filters.instrument_id:
        qs = qs.filter(instrument_id=filters.instrument_id)
    if filters.side:
        qs = qs.filter(side=filters.side)
    if filters.outcome == "open":
        qs = qs.filter(status=Position.Status.OPEN)
    elif filters.outcome in ("win", "loss"):
        net = Q(gross_pnl__gt=F("fees")) if filters.outcome == "win" else Q(gross_pnl__lte=F("fees"))
        qs = qs.filter(Q(status=Position.Status.CLOSED) & net)
    if filters.date_from:
        qs = qs.filter(opened_at__gte=_day_start(filters.date_from))
    if filters.date_to:
        qs = qs.filter(opened_at__lt=_day_start(filters.date_to) + timedelta(days=1))
    return qs


NEWEST_FIRST = ("-opened_at", "-id")
# What the trades table shows: the ghost's params/state and the instrument's settings (JSON decoded per row) stay
# in the database.
PAGE_FIELDS = ("id", "opened_at", "closed_at", "side", "status", "quantity", "entry_price", "exit_price",
               "exit_reason", "gross_pnl", "fees", "ghost__id", "ghost__name", "instrument__id", "instrument__symbol")
TradePage = KeysetPage[Position]


def trades_page(
    *, filters: TradeFilter = TradeFilter(), before: Cursor | None = None, after: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> TradePage:
    """One page of trades, newest first (apps.common.keyset: at most two queries whatever the table's size)."""
    qs = trades_filtered(filters).select_related("ghost", "instrument").only(*PAGE_FIELDS)
    return keyset_page(qs, field="opened_at", before=before, after=after, limit=limit)


def trade_cursor(position: Position) -> Cursor:
    return Cursor.of(position, "opened_at")


EXPORT_FIELDS = ("id", "opened_at", "closed_at", "ghost_id", "instrument_id", "side", "status", "quantity",
                 "entry_price", "exit_price", "exit_reason", "gross_pnl", "fees")
Cell = str | int


def _places(name: str) -> int:
    return Position._meta.get_field(name).decimal_places


_QTY, _PRICE, _MONEY = _places("quantity"), _places("entry_price"), _places("gross_pnl")
_MONEY_SCALE = 10**_MONEY


def _net_text(gross: Any, fees: Any) -> str:
    """gross - fees, exact to the money field's places (in integer units, so no float subtraction error)."""
    if gross is None:
        return ""
    if isinstance(gross, Decimal):
        return f"{gross - fees:.{_MONEY}f}"
    units = round(gross * _MONEY_SCALE) - round(fees * _MONEY_SCALE)
    whole, frac = divmod(abs(units), _MONEY_SCALE)
    return f"{'-' if units < 0 else ''}{whole}.{frac:0{_MONEY}d}"


def _aware(value: Any) -> datetime:
    # Django's SQLite connection parses the stored text (naive UTC) into naive datetimes; PostgreSQL's are aware.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str:  # SQLite's stored text: naive UTC (the common case, kept cheap)
        return value.replace(" ", "T", 1) + "+00:00"
    return _aware(value).isoformat()


def trades_export_rows(
    *, filters: TradeFilter = TradeFilter(), batch: int = EXPORT_BATCH
) -> Iterator[list[tuple[Cell, ...]]]:
    """Every filtered trade newest first, in batches of at most `batch` rows of text cells:
    (id, opened_at, closed_at, ghost_id, instrument_id, side, status, quantity, entry_price, exit_price,
    exit_reason, gross_pnl, fees, net_pnl), times ISO 8601 in UTC, decimals plain with their field's places,
    "" for none. The ghost and instrument stay ids (the caller maps them: a join per row costs more than the two
    small lookups).

    Each batch is its own short keyset query on the (opened_at, id) index (no cursor stays open between batches,
    so it works when ASGI pulls one batch per thread hop and holds no lock on SQLite). The values_list query is run
    on a plain cursor: Django's per-value converters (Decimal and datetime objects for every cell) cost more than
    the whole rest of the export, and the cells are text anyway.
    """
    qs = trades_filtered(filters).order_by(*NEWEST_FIRST)
    if connections[qs.db].vendor == "sqlite":
        # The stored text as it is ("YYYY-MM-DD HH:MM:SS[.ffffff]", UTC): the connection would parse every time
        # into a datetime only for it to be formatted back (a sixth of the export's time).
        qs = qs.annotate(opened_text=Cast("opened_at", TextField()), closed_text=Cast("closed_at", TextField()))
        fields = ["opened_text" if f == "opened_at" else "closed_text" if f == "closed_at" else f
                  for f in EXPORT_FIELDS]
    else:
        fields = list(EXPORT_FIELDS)
    qs = qs.values_list(*fields)
    # Decimals as plain digits with the field's places ("0.00150000", never "1.5E-3" or "0E-8"). SQLite keeps a
    # DecimalField as REAL (INTEGER when whole): formatting that float to the field's places gives the digits
    # Django's own converter would (it rounds the same float to the same places); PostgreSQL hands back Decimals,
    # formatted the same way. Bound methods looked up once: this loop runs a million times.
    qty_text, price_text = f"{{:.{_QTY}f}}".format, f"{{:.{_PRICE}f}}".format
    money_text = f"{{:.{_MONEY}f}}".format
    last: Cursor | None = None
    while True:
        page = (qs.filter(older_than("opened_at", last)) if last else qs)[:batch]
        sql, params = page.query.get_compiler(using=page.db).as_sql()
        with connections[page.db].cursor() as cur:
            cur.execute(sql, params)
            raw = cur.fetchall()
        if not raw:
            return
        yield [
            (pk, _iso(opened), _iso(closed), ghost_id, inst_id, side, status, qty_text(qty), price_text(entry),
             "" if exit_price is None else price_text(exit_price), exit_reason,
             "" if gross is None else money_text(gross), money_text(fees), _net_text(gross, fees))
            for (pk, opened, closed, ghost_id, inst_id, side, status, qty, entry, exit_price, exit_reason, gross,
                 fees) in raw
        ]
        if len(raw) < batch:
            return
        last = Cursor(_aware(raw[-1][1]), raw[-1][0])
