"""Reads of the trade history (one row per position) at any size: keyset pages and the CSV export.

Newest first on (opened_at, id). A page never counts the table and never offsets into it: it asks for the 51
rows after a cursor (the last row's (opened_at, id)), which the indexes on trading_position (opened_at, id) and
(ghost | side | status, opened_at, id) answer as a range read whatever the table's size
(tests/dashboard/test_trades_explain.py checks the plans). The CSV walks the same order in batches of plain
tuples (values_list: no model instances, no re-sort), so a million rows stream in well under a minute.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import F, Q, QuerySet

from apps.trading.models import Position

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR_RE = re.compile(r"(?P<us>[0-9]{1,19})_(?P<id>[0-9]{1,19})", re.ASCII)
US = timedelta(microseconds=1)
PAGE_SIZE = 50  # rows per page: one screen on a laptop, cheap to render
EXPORT_BATCH = 5000  # rows per export query: big enough to amortise the query, small enough to stream


@dataclass(frozen=True)
class TradeFilter:
    """The trades page's filters. outcome: win | loss | open (win/loss are net of fees)."""

    ghost_id: int | None = None
    side: str | None = None
    outcome: str | None = None
    date_from: date | None = None  # UTC days, both ends included
    date_to: date | None = None


@dataclass(frozen=True)
class Cursor:
    """A position's place in the (opened_at, id) order. In URLs: '<microseconds since 1970>_<id>'."""

    opened_at: datetime
    id: int

    @property
    def token(self) -> str:
        return f"{(self.opened_at - EPOCH) // US}_{self.id}"

    @classmethod
    def parse(cls, token: str | None) -> "Cursor | None":
        """A cursor from a URL, or None for anything that is not one (a bad cursor shows the newest page)."""
        match = CURSOR_RE.fullmatch(token or "")
        if match is None:  # int() alone would take "1_2", " 12", "١٢" (other scripts' digits) and "-5"
            return None
        try:
            ident = int(match["id"])
            opened_at = EPOCH + timedelta(microseconds=int(match["us"]))
        except OverflowError:
            return None
        if ident <= 0 or not datetime(1971, 1, 1, tzinfo=UTC) <= opened_at < datetime(9999, 1, 1, tzinfo=UTC):
            return None
        return cls(opened_at, ident)

    @classmethod
    def of(cls, position: Position) -> "Cursor":
        return cls(position.opened_at, position.pk)


@dataclass(frozen=True)
class TradePage:
    rows: list[Position]
    newer: Cursor | None  # link to the rows just newer than rows[0] (None: this is the newest page)
    older: Cursor | None  # link to the rows just older than rows[-1] (None: nothing older)
    at_cursor: bool  # reached through a cursor (show a link back to the newest page)


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def trades_filtered(filters: TradeFilter) -> QuerySet[Position]:
    """Every position the filters keep, unordered (callers order and bound it)."""
    qs = Position.objects.all()
    if filters.ghost_id:
        qs = qs.filter(ghost_id=filters.ghost_id)
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


def _older_than(c: Cursor) -> Q:
    # (opened_at, id) < (t, id), written so the planner sees a range on opened_at it can seek the index to
    # (opened_at <= t), with the tie on t broken by id: an OR of the two halves alone is not a range.
    return Q(opened_at__lte=c.opened_at) & (Q(opened_at__lt=c.opened_at) | Q(id__lt=c.id))


def _newer_than(c: Cursor) -> Q:
    return Q(opened_at__gte=c.opened_at) & (Q(opened_at__gt=c.opened_at) | Q(id__gt=c.id))


NEWEST_FIRST = ("-opened_at", "-id")


def trades_page(
    *, filters: TradeFilter = TradeFilter(), before: Cursor | None = None, after: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> TradePage:
    """One page of trades, newest first: the newest, the ones older than `before`, or newer than `after`.

    At most two queries, whatever the table's size: `after` reads upwards (oldest first) and turns the rows
    round; when fewer than a page are newer, the newest page is shown instead (never a short page at the top).
    """
    base = trades_filtered(filters).select_related("ghost", "instrument")
    if after is not None and before is None:
        up = list(base.filter(_newer_than(after)).order_by("opened_at", "id")[: limit + 1])
        if len(up) > limit:
            rows = up[:limit][::-1]
            return TradePage(rows=rows, newer=Cursor.of(rows[0]), older=Cursor.of(rows[-1]), at_cursor=True)
        after = None  # within a page of the top: the newest page
    qs = base.filter(_older_than(before)) if before is not None else base
    rows = list(qs.order_by(*NEWEST_FIRST)[: limit + 1])
    older = Cursor.of(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    newer = Cursor.of(rows[0]) if before is not None and rows else None
    return TradePage(rows=rows, newer=newer, older=older, at_cursor=before is not None)


EXPORT_FIELDS = ("id", "opened_at", "closed_at", "ghost_id", "instrument_id", "side", "status", "quantity",
                 "entry_price", "exit_price", "exit_reason", "gross_pnl", "fees")


def trades_export_rows(
    *, filters: TradeFilter = TradeFilter(), batch: int = EXPORT_BATCH
) -> Iterator[list[tuple[Any, ...]]]:
    """Every filtered trade as tuples of EXPORT_FIELDS, newest first, in batches of at most `batch`.

    Each batch is its own short keyset query (no cursor stays open between batches, so it works when ASGI pulls
    one batch per thread hop and holds no lock on SQLite); the ghost and instrument are ids (the caller maps
    them: a join per row would cost more than the two small lookups).
    """
    qs = trades_filtered(filters).order_by(*NEWEST_FIRST).values_list(*EXPORT_FIELDS)
    last: Cursor | None = None
    while True:
        rows = list((qs.filter(_older_than(last)) if last else qs)[:batch])
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        last = Cursor(rows[-1][1], rows[-1][0])


def net_pnl(gross: Decimal | None, fees: Decimal) -> Decimal | None:
    return None if gross is None else gross - fees
