"""Reads of the ledger. Equity = start capital + realised gross P&L - all fees + unrealised P&L."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum

from apps.market.selectors import desk_now, last_prices
from apps.trading.models import Fill, Position

ZERO = Decimal(0)


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


def equity() -> Decimal:
    realised = (
        Position.objects.filter(status=Position.Status.CLOSED).aggregate(s=Sum("gross_pnl"))["s"] or ZERO
    )
    fees = Fill.objects.aggregate(s=Sum("fee"))["s"] or ZERO
    prices = last_prices()
    open_pnl = sum((unrealised(p, prices.get(p.instrument_id)) for p in open_positions()), ZERO)
    return settings.HFT_START_CAPITAL + realised - fees + open_pnl


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


def pnl_since(
    since: datetime, *, ghost_id: int | None = None, prices: dict[int, float] | None = None
) -> PnlSummary:
    closed = Position.objects.filter(status=Position.Status.CLOSED, closed_at__gte=since)
    opened = open_positions()
    if ghost_id is not None:
        closed, opened = closed.filter(ghost_id=ghost_id), opened.filter(ghost_id=ghost_id)
    agg = closed.aggregate(g=Sum("gross_pnl"), f=Sum("fees"))
    prices = last_prices() if prices is None else prices
    open_pnl = sum((unrealised(p, prices.get(p.instrument_id)) - p.fees for p in opened), ZERO)
    return PnlSummary(
        realised=(agg["g"] or ZERO) - (agg["f"] or ZERO), unrealised=open_pnl, trades=closed.count()
    )


def ghost_period_pnl(*, prices: dict[int, float] | None = None) -> dict[int, PnlSummary]:
    """Each ghost's P&L over its own target period (day when it has no target).

    Same figures as `pnl_since(period_start(today, period), ghost_id=...)` per ghost, but in a fixed
    number of queries whatever the ghost count: it runs in the header of every page and after every
    fill, so one aggregate per ghost would make the dashboard N+1.
    """
    from apps.ghosts.models import Ghost
    from apps.revenue.models import RevenueTarget

    today = desk_now().date()
    prices = last_prices() if prices is None else prices
    periods = dict(RevenueTarget.objects.filter(ghost__isnull=False).values_list("ghost_id", "period"))
    ghost_ids = list(Ghost.objects.values_list("pk", flat=True))
    starts = {p: period_start(today, p) for p in ("day", "week", "month")}
    # One grouped query: realised gross, fees and trade count since each possible period start.
    aggs = {}
    for p, since in starts.items():
        window = Q(closed_at__gte=since)
        aggs[f"g_{p}"] = Sum("gross_pnl", filter=window)
        aggs[f"f_{p}"] = Sum("fees", filter=window)
        aggs[f"n_{p}"] = Count("id", filter=window)
    closed = {
        row["ghost_id"]: row
        for row in Position.objects.filter(status=Position.Status.CLOSED, closed_at__gte=min(starts.values()))
        .values("ghost_id")
        .order_by("ghost_id")
        .annotate(**aggs)
    }
    open_pnl: dict[int, Decimal] = {}
    for p in Position.objects.filter(status=Position.Status.OPEN).only(
        "ghost_id", "instrument_id", "side", "entry_price", "quantity", "fees"
    ):
        mark = unrealised(p, prices.get(p.instrument_id)) - p.fees
        open_pnl[p.ghost_id] = open_pnl.get(p.ghost_id, ZERO) + mark
    out = {}
    for gid in ghost_ids:
        period = periods.get(gid, "day")
        row = closed.get(gid, {})
        realised = (row.get(f"g_{period}") or ZERO) - (row.get(f"f_{period}") or ZERO)
        out[gid] = PnlSummary(
            realised=realised, unrealised=open_pnl.get(gid, ZERO), trades=row.get(f"n_{period}") or 0
        )
    return out


def pnl_snapshot() -> dict:
    """What the header and overview show, as one typed event payload."""
    prices = last_prices()
    now = desk_now()
    today = pnl_since(period_start(now.date(), "day"), prices=prices)
    per_ghost = ghost_period_pnl(prices=prices)
    return {
        "type": "pnl.updated",
        "equity": float(equity()),
        "today_pnl": float(today.total),
        "realised_today": float(today.realised),
        "unrealised": float(today.unrealised),
        "open_positions": open_positions().count(),
        "day": now.date().isoformat(),
        "ghosts": {str(k): float(v.total) for k, v in per_ghost.items()},
    }


def pnl_push() -> None:
    from apps.common.realtime import send_now
    from apps.trading.events import PORTFOLIO_GROUP

    send_now(PORTFOLIO_GROUP, pnl_snapshot())


def trades(
    *,
    ghost_id: int | None = None,
    side: str | None = None,
    outcome: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet[Position]:
    """Trade history: one row per position. outcome: win | loss | open."""
    qs = Position.objects.select_related("ghost", "instrument", "signal").order_by("-opened_at", "-id")
    if ghost_id:
        qs = qs.filter(ghost_id=ghost_id)
    if side:
        qs = qs.filter(side=side)
    if outcome == "open":
        qs = qs.filter(status=Position.Status.OPEN)
    elif outcome in ("win", "loss"):
        net = Q(gross_pnl__gt=F("fees")) if outcome == "win" else Q(gross_pnl__lte=F("fees"))
        qs = qs.filter(Q(status=Position.Status.CLOSED) & net)
    if date_from:
        qs = qs.filter(opened_at__gte=period_start(date_from, "day"))
    if date_to:
        qs = qs.filter(opened_at__lt=period_start(date_to, "day") + timedelta(days=1))
    return qs


def positions_for_chart(*, instrument_id: int, since: datetime) -> list[Position]:
    """Positions on one instrument opened or closed since `since`: the chart's entry and exit markers."""
    return list(
        Position.objects.filter(instrument_id=instrument_id)
        .filter(Q(opened_at__gte=since) | Q(closed_at__gte=since))
        .only(
            "id",
            "ghost_id",
            "side",
            "opened_at",
            "entry_price",
            "closed_at",
            "exit_price",
            "exit_reason",
            "gross_pnl",
            "fees",
        )
        .order_by("opened_at", "id")[:500]
    )
