"""Materialised realised P&L: per-day rows (`PnlDay`) and each ghost's running curve figures (`GhostLedger`).

Every close adds its position here in the transaction that closes it (paper `position_close`, the live
close records, a kill-switch flatten through either), so the header, the overview, the ghosts page and
`state.json` read a few hundred rows whatever the size of the ledger. The positions stay the truth:
`pnl_days_rebuild` re-derives both tables from them (the data migration runs it once), and
tests/revenue prove the rows equal the sums over positions to the cent.

A bulk writer (a fast replay closing many positions in one statement) calls `pnl_days_add` with the list.
This module imports only models, so any close path may import it without an import circle.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, DecimalField, F, Q, Sum, When
from django.db.models.functions import TruncDate

from apps.revenue.models import GhostLedger, PnlDay
from apps.trading.models import Position

ZERO = Decimal(0)
_MONEY = DecimalField(max_digits=24, decimal_places=8)


def trading_day(closed_at: datetime) -> date:
    """The trading day of a close: its UTC date (data time), the day "today" means on the desk."""
    return closed_at.astimezone(UTC).date()


def _day_key(p: Position) -> tuple[int, int, date]:
    return p.ghost_id, p.instrument_id, trading_day(p.closed_at)


@transaction.atomic
def pnl_days_add(*, positions: Iterable[Position]) -> None:
    """Count closed positions into their day rows and their ghosts' running figures.

    Call it once per position, in the transaction that closes it (after `gross_pnl`, `fees` and `closed_at`
    are final). Rows are read with a lock and written with Decimal arithmetic, so two closes of different
    ghosts never lose an update and the sums stay exact.
    """
    closed = [p for p in positions if p.status == Position.Status.CLOSED and p.gross_pnl is not None]
    if not closed:
        return
    by_day: dict[tuple[int, int, date], list[Position]] = defaultdict(list)
    for p in closed:
        by_day[_day_key(p)].append(p)
    for (ghost_id, instrument_id, day), group in by_day.items():
        row, _ = PnlDay.objects.select_for_update().get_or_create(ghost_id=ghost_id, instrument_id=instrument_id,
                                                                   day=day)
        for p in group:
            net = p.gross_pnl - p.fees
            row.trades += 1
            row.gross += p.gross_pnl
            row.fees += p.fees
            if net > 0:
                row.wins += 1
                row.win_net += net
            elif net < 0:
                row.loss_net += net
        row.save()
    by_ghost: dict[int, list[Position]] = defaultdict(list)
    for p in closed:
        by_ghost[p.ghost_id].append(p)
    capital = settings.HFT_START_CAPITAL
    for ghost_id, group in by_ghost.items():
        ledger, _ = GhostLedger.objects.select_for_update().get_or_create(ghost_id=ghost_id,
                                                                          defaults={"capital": capital})
        group.sort(key=lambda p: (p.closed_at, p.pk))
        first = group[0]
        in_order = ledger.last_closed_at is None or (first.closed_at, first.pk) > (
            ledger.last_closed_at, ledger.last_position_id)
        if not in_order or ledger.capital != capital:
            # A back-dated close (a replay of older data after newer trades) changes the curve before its
            # end: the running peak no longer holds, so the ghost's figures are re-derived from its positions.
            ghost_ledger_rebuild(ghost_id=ghost_id)
            continue
        for p in group:
            _ledger_step(ledger, p.gross_pnl - p.fees, p.closed_at, p.pk)
        ledger.save()


def _ledger_step(ledger: GhostLedger, net: Decimal, closed_at: datetime, position_id: int) -> None:
    """One close on the curve: the same running peak and fall as the engine's `max_drawdown` over
    [capital, capital + cum_1, capital + cum_2, ...]."""
    ledger.trades += 1
    ledger.cum_net += net
    ledger.peak_net = max(ledger.peak_net, ledger.cum_net)
    fall = ledger.peak_net - ledger.cum_net
    ledger.max_dd_abs = max(ledger.max_dd_abs, fall)
    peak = ledger.capital + ledger.peak_net
    if peak > 0:
        ledger.max_dd = max(ledger.max_dd, float(fall / peak))
    ledger.last_closed_at, ledger.last_position_id = closed_at, position_id


@transaction.atomic
def ghost_ledger_rebuild(*, ghost_id: int) -> GhostLedger:
    """Re-derive one ghost's running figures from its closed positions, in closing order."""
    ledger = GhostLedger(ghost_id=ghost_id, capital=settings.HFT_START_CAPITAL)
    rows = (Position.objects.filter(ghost_id=ghost_id, status=Position.Status.CLOSED)
            .order_by("closed_at", "id").values_list("gross_pnl", "fees", "closed_at", "id"))
    for gross, fees, closed_at, pk in rows.iterator(chunk_size=5000):
        _ledger_step(ledger, gross - fees, closed_at, pk)
    ledger.save()  # a full row: replaces the stored one (primary key = ghost)
    return ledger


@transaction.atomic
def pnl_days_rebuild() -> int:
    """Rebuild every `PnlDay` and `GhostLedger` row from the ledger; returns the number of day rows.

    Run after a bulk load that bypassed the close services (benchmarks/build_big_db.py) or to repair.
    The day rows come from one grouped query; the running figures need the per-trade order, one ghost
    at a time.
    """
    PnlDay.objects.all().delete()
    GhostLedger.objects.all().delete()
    net = F("gross_pnl") - F("fees")
    rows = (
        Position.objects.filter(status=Position.Status.CLOSED)
        .annotate(day=TruncDate("closed_at", tzinfo=UTC))
        .values("ghost_id", "instrument_id", "day")
        .order_by("ghost_id", "instrument_id", "day")
        .annotate(
            n=Count("id"),
            w=Count("id", filter=Q(gross_pnl__gt=F("fees"))),
            g=Sum("gross_pnl"),
            f=Sum("fees"),
            wn=Sum(Case(When(gross_pnl__gt=F("fees"), then=net), default=ZERO, output_field=_MONEY)),
            ln=Sum(Case(When(gross_pnl__lt=F("fees"), then=net), default=ZERO, output_field=_MONEY)),
        )
    )
    days = [
        PnlDay(ghost_id=r["ghost_id"], instrument_id=r["instrument_id"], day=r["day"], trades=r["n"], wins=r["w"],
               gross=r["g"] or ZERO, fees=r["f"] or ZERO, win_net=r["wn"] or ZERO, loss_net=r["ln"] or ZERO)
        for r in rows
    ]
    PnlDay.objects.bulk_create(days, batch_size=2000)
    for ghost_id in sorted({d.ghost_id for d in days}):
        ghost_ledger_rebuild(ghost_id=ghost_id)
    return len(days)
