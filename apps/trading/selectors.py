"""Reads of the ledger. Equity = start capital + realised net P&L + open positions marked to the last price,
less their entry fees.

Realised figures come from the materialised day rows (`apps.revenue.models.PnlDay`, written by every close in
its own transaction), never from a sum over every position: the header runs this on every page and after
every fill, and a desk with a million closed trades would spend seconds on it.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.db.models import Count, F, FloatField, Q, QuerySet, Sum
from django.db.models.functions import Cast

from apps.market.selectors import desk_now, last_prices
from apps.revenue.models import GhostLedger, PnlDay
from apps.trading.models import Position

ZERO = Decimal(0)
PERIODS = ("day", "week", "month")


def open_positions(*, instrument_id: int | None = None) -> QuerySet[Position]:
    qs = Position.objects.filter(status=Position.Status.OPEN).select_related("ghost", "instrument")
    return qs.filter(instrument_id=instrument_id) if instrument_id else qs


def unrealised(position: Position, price: float | None) -> Decimal:
    if price is None:
        return ZERO
    sign = 1 if position.side == "long" else -1
    return ((Decimal(repr(price)) - position.entry_price) * position.quantity * sign).quantize(
        Decimal("0.00000001")
    )


def _open_marks(prices: dict[int, float], *, ghost_id: int | None = None) -> dict[int, Decimal]:
    """Per ghost: its open positions' unrealised P&L less the fees paid on them so far (one query)."""
    qs = Position.objects.filter(status=Position.Status.OPEN)
    if ghost_id is not None:
        qs = qs.filter(ghost_id=ghost_id)
    out: dict[int, Decimal] = {}
    for p in qs.only("ghost_id", "instrument_id", "side", "entry_price", "quantity", "fees"):
        out[p.ghost_id] = out.get(p.ghost_id, ZERO) + unrealised(p, prices.get(p.instrument_id)) - p.fees
    return out


def realised_net() -> Decimal:
    """Net P&L of every closed position (gross less entry and exit fees): the ghosts' running totals, one row
    per ghost (written with the day rows in each close's transaction), so the cost does not grow with history."""
    return GhostLedger.objects.aggregate(s=Sum("cum_net"))["s"] or ZERO


def equity(*, prices: dict[int, float] | None = None) -> Decimal:
    prices = last_prices() if prices is None else prices
    return settings.HFT_START_CAPITAL + realised_net() + sum(_open_marks(prices).values(), ZERO)


def period_start(day: date, period: str) -> datetime:
    """UTC start of the day, ISO week (Monday) or month containing `day`."""
    if period == "week":
        day = day - timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return datetime.combine(day, time.min, tzinfo=UTC)


@dataclass(frozen=True)
class PnlSummary:
    realised: Decimal  # net of fees, positions closed since `since`
    unrealised: Decimal  # open positions marked to the last price, minus their fees so far
    trades: int

    @property
    def total(self) -> Decimal:
        return self.realised + self.unrealised


def _is_day_start(since: datetime) -> bool:
    return since.astimezone(UTC).time() == time.min


def pnl_since(
    since: datetime, *, ghost_id: int | None = None, prices: dict[int, float] | None = None,
    until: date | None = None,
) -> PnlSummary:
    """P&L since `since`: positions closed since then (net) plus the open ones marked to the last price.

    `until`, the desk's trading day (data time): closes on later days are not counted. The data clock can be
    behind closes already stored (a replay run again over earlier data; a close stamped with the wall time while
    a replay trades last March), and "today" is the data's day, not everything from its start on.

    A UTC day boundary (every period start) reads the day rows; any other instant sums the positions closed
    since then over the `closed_at` index (a short window, never the whole history).
    """
    if _is_day_start(since):
        closed = PnlDay.objects.filter(day__gte=since.astimezone(UTC).date())
        if until is not None:
            closed = closed.filter(day__lte=until)
        if ghost_id is not None:
            closed = closed.filter(ghost_id=ghost_id)
        agg = closed.aggregate(g=Sum("gross"), f=Sum("fees"), n=Sum("trades"))
    else:
        positions = Position.objects.filter(status=Position.Status.CLOSED, closed_at__gte=since)
        if until is not None:
            positions = positions.filter(closed_at__lt=period_start(until, "day") + timedelta(days=1))
        if ghost_id is not None:
            positions = positions.filter(ghost_id=ghost_id)
        agg = positions.aggregate(g=Sum("gross_pnl"), f=Sum("fees"), n=Count("id"))
    prices = last_prices() if prices is None else prices
    open_pnl = sum(_open_marks(prices, ghost_id=ghost_id).values(), ZERO)
    return PnlSummary(realised=(agg["g"] or ZERO) - (agg["f"] or ZERO), unrealised=open_pnl, trades=agg["n"] or 0)


@dataclass(frozen=True)
class _Book:
    """Everything the header needs, from three small queries: realised sums per ghost (all time and per
    period start), the open positions' marks per ghost, and each ghost's target period."""

    today: date
    realised_all: Decimal
    by_ghost: dict[int, dict[str, Decimal | int]]  # ghost -> {g_day, f_day, n_day, ... per period}
    marks: dict[int, Decimal]
    periods: dict[int, str]
    ghost_ids: list[int]


def _book(prices: dict[int, float], today: date) -> _Book:
    from apps.ghosts.models import Ghost
    from apps.revenue.models import RevenueTarget

    starts = {p: period_start(today, p).date() for p in PERIODS}
    aggs = {}
    for p, since in starts.items():
        window = Q(day__gte=since, day__lte=today)  # `today`, the data's day: see pnl_since's `until`
        aggs[f"g_{p}"] = Sum("gross", filter=window)
        aggs[f"f_{p}"] = Sum("fees", filter=window)
        aggs[f"n_{p}"] = Sum("trades", filter=window)
    # One grouped query over the day rows of the longest period (at most ~5 weeks x ghosts x instruments, on the
    # day index), and the all-time total from the ghosts' running totals: neither grows with the history.
    by_ghost = {row["ghost_id"]: row for row in PnlDay.objects.filter(day__gte=min(starts.values()), day__lte=today)
                .values("ghost_id").order_by("ghost_id").annotate(**aggs)}
    realised_all = realised_net()
    periods = dict(RevenueTarget.objects.filter(ghost__isnull=False).values_list("ghost_id", "period"))
    return _Book(today=today, realised_all=realised_all, by_ghost=by_ghost, marks=_open_marks(prices),
                 periods=periods, ghost_ids=list(Ghost.objects.values_list("pk", flat=True)))


def _ghost_summaries(book: _Book) -> dict[int, PnlSummary]:
    out = {}
    for gid in book.ghost_ids:
        period = book.periods.get(gid, "day")
        row = book.by_ghost.get(gid, {})
        realised = (row.get(f"g_{period}") or ZERO) - (row.get(f"f_{period}") or ZERO)
        out[gid] = PnlSummary(realised=realised, unrealised=book.marks.get(gid, ZERO),
                              trades=row.get(f"n_{period}") or 0)
    return out


def ghost_period_pnl(*, prices: dict[int, float] | None = None) -> dict[int, PnlSummary]:
    """Each ghost's P&L over its own target period (day when it has no target), from the day rows.

    Same figures as `pnl_since(period_start(today, period), ghost_id=...)` per ghost, in a fixed number of
    queries whatever the ghost count or the ledger's size.
    """
    prices = last_prices() if prices is None else prices
    return _ghost_summaries(_book(prices, desk_now().date()))


def pnl_snapshot() -> dict:
    """What the header and overview show, as one typed event payload (a fixed handful of small queries)."""
    prices = last_prices()
    now = desk_now()
    book = _book(prices, now.date())
    marks = sum(book.marks.values(), ZERO)
    realised_today = sum(((r["g_day"] or ZERO) - (r["f_day"] or ZERO) for r in book.by_ghost.values()), ZERO)
    return {
        "type": "pnl.updated",
        "equity": float(settings.HFT_START_CAPITAL + book.realised_all + marks),
        "today_pnl": float(realised_today + marks),
        "realised_today": float(realised_today),
        "unrealised": float(marks),
        "open_positions": open_positions().count(),
        "day": now.date().isoformat(),
        "ghosts": {str(k): float(v.total) for k, v in _ghost_summaries(book).items()},
    }


def pnl_push() -> None:
    from apps.common.realtime import send_now
    from apps.trading.events import PORTFOLIO_GROUP

    send_now(PORTFOLIO_GROUP, pnl_snapshot())


class ChartMark(NamedTuple):
    """One position as the chart draws it: entry and exit markers, prices and net P&L as floats."""

    pk: int
    side: str
    opened_at: datetime
    entry_price: float
    closed_at: datetime | None
    exit_price: float | None
    exit_reason: str
    net_pnl: float | None


def positions_for_chart(*, instrument_id: int, since: datetime) -> list[ChartMark]:
    """Positions on one instrument opened or closed since `since`, oldest entry first, at most 500: the
    chart's entry and exit markers.

    Two range reads, each on its own index (closed_at; opened_at): one query with `opened OR closed` made
    SQLite scan every position of the instrument (1.4 s at a million trades). Positions opened before
    `since` sort first, so they are read first and the newer ones fill the rest of the 500. Plain tuples
    with float prices: model instances and Decimal conversion of 500 rows were most of the overview's time.
    """
    limit = 500
    # `instrument_id + 0`: SQLite without table statistics (a desk never runs ANALYZE) prefers the equality on
    # the instrument's index to the time range and then sorts every position of the instrument; an expression
    # cannot use that index, so the time index drives the read and the instrument is checked per row.
    mine = Position.objects.alias(inst=F("instrument_id") + 0).filter(inst=instrument_id)
    cols = ("id", "side", "opened_at", "entry", "closed_at", "exit", "exit_reason", "net")
    mine = mine.annotate(entry=Cast("entry_price", FloatField()), exit=Cast("exit_price", FloatField()),
                         net=Cast(F("gross_pnl") - F("fees"), FloatField())).values_list(*cols)
    # Ordered by closed_at so the closed_at index drives the read (ordering by opened_at made SQLite walk the
    # opened_at index over the whole history); they are few (at most one per ghost spans `since`).
    older = sorted(mine.filter(closed_at__gte=since, opened_at__lt=since).order_by("closed_at", "id")[:limit],
                   key=lambda r: (r[2], r[0]))
    newer = list(mine.filter(opened_at__gte=since).order_by("opened_at", "id")[: limit - len(older)]) \
        if len(older) < limit else []
    return [ChartMark(*r) for r in older + newer]
