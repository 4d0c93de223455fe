"""Deleting an instrument from the Instruments page (issue 11's leftover).

What may go: an instrument with no open position, whose feed is stopped (and its runner gone), with no lab run,
parameter study or history download queued or running on it, and that never traded LIVE. Refused otherwise, with
the reason (the operator's next step in the words).

What goes with it, all counted on the confirm page before anything is deleted (the decision, documented in
docs/instruments.md): its ghost instances (with their signals, revenue targets and ledger rows), its PAPER trade
record (positions, orders, fills and the P&L day rows they made: the realised net P&L they add to the equity leaves
it, and the page says how much), its lab runs and parameter studies (their bars go too: they could not be re-run),
and its stored market data (1m candles, large trades, liquidations, history downloads, the feed's status). The
audit log keeps one `instrument.deleted` row with every count and the net P&L; audit rows of earlier actions stay.

Why not keep the history: every one of those tables points at the instrument (PROTECT), so keeping them means
keeping the instrument row under a "retired" flag that every list, form and selector of the desk would then have
to honour; and the candles of a market are the exchange's to download again. A LIVE trade record is the one thing
the desk cannot get back (the exchange's orders and fills under the account's keys): an instrument that traded
live is kept.

Lives in apps.dashboard, the one layer that may import every app it touches (apps.market imports nothing above it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from decimal import Decimal

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Sum

from apps.audit.services import audit_record
from apps.ghosts.models import Ghost
from apps.lab.models import BacktestRun, BacktestSignal, BacktestTrade
from apps.market.models import Candle, FeedStatus, HistoryDownload, Instrument, LargeTrade, LiquidationEvent
from apps.market.tasks import _lock_key
from apps.research.models import Study, Trial
from apps.revenue.models import GhostLedger, PnlDay, RevenueTarget
from apps.signals.models import Signal
from apps.trading.models import Fill, Mode, Order, Position


class InstrumentDeleteError(ValueError):
    """A refused delete, in words fit for the operator."""


@dataclasses.dataclass(frozen=True)
class DeletePlan:
    """What deleting `instrument` would do now: the refusals (empty: it may go), the rows that go with it
    (label -> count, in the order the page lists them), the realised net P&L of its paper trades (quote units)
    and `token`, a digest of the counts: the confirm carries it, so rows added after the page was shown (a new
    signal, candles) are not deleted unseen."""

    instrument: Instrument
    refusals: tuple[str, ...]
    counts: tuple[tuple[str, int], ...]
    ghosts: tuple[str, ...]
    realised_net: Decimal
    comes_back: str  # why the desk re-creates it at its next start ("" when it does not)
    token: str

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    @property
    def name(self) -> str:
        return f"{self.instrument.exchange.code}:{self.instrument.symbol}"


def _comes_back(inst: Instrument) -> str:
    """The desk's start (apps.runtime.services.desk_ensure) re-creates its own instrument and HFT_INSTRUMENTS'."""
    name = f"{inst.exchange.code}:{inst.symbol}"
    if name.lower() in {s.strip().lower() for s in settings.HFT_INSTRUMENTS}:
        return "it is listed in HFT_INSTRUMENTS: the desk adds it again, with a feed and its ghosts, at its next start"
    if name == "binance:BTC/USDT" and not settings.HFT_FEED.startswith("replay:"):
        return ("it is the desk's default instrument: `make run` adds it again, with a feed and its ghosts, at its "
                "next start")
    return ""


def instrument_delete_plan(*, instrument_id: int) -> DeletePlan:
    """The refusals and counts of deleting one instrument (Instrument.DoesNotExist when there is none)."""
    inst = Instrument.objects.select_related("exchange").get(pk=instrument_id)
    refusals = []
    positions = Position.objects.filter(instrument=inst)
    n_open = positions.filter(status=Position.Status.OPEN).count()
    if n_open:
        them = "them" if n_open != 1 else "it"
        refusals.append(f"{n_open} open position{'s' if n_open != 1 else ''} on {inst}: close {them} first "
                        "(Overview: Close, or the kill switch's flatten)")
    fs = FeedStatus.objects.filter(instrument=inst).first()
    if fs is not None and fs.state != FeedStatus.State.STOPPED:
        refusals.append(f"its feed is {fs.state} ({fs.source}): stop it first")
    elif cache.get(_lock_key(inst.pk)) is not None:
        refusals.append("its feed is still stopping (the runner has not let go yet): try again in a few seconds")
    n_live = positions.filter(mode=Mode.LIVE).count()
    if n_live:
        refusals.append(f"{n_live} live trade{'s' if n_live != 1 else ''} on {inst}: a live trade record is the "
                        "account's (the exchange's orders and fills), so an instrument that traded live is kept")
    busy = [(BacktestRun.objects.filter(instrument=inst, status__in=(BacktestRun.Status.QUEUED,
                                                                     BacktestRun.Status.RUNNING)).count(),
             "lab run", "cancel it on its page or let it finish"),
            (Study.objects.filter(instrument=inst).active().count(), "parameter study",
             "cancel it on its page or let it finish"),
            (HistoryDownload.objects.filter(instrument=inst, state__in=(HistoryDownload.State.QUEUED,
                                                                        HistoryDownload.State.RUNNING)).count(),
             "history download", "let it finish")]
    for n, what, then in busy:
        if n:
            refusals.append(f"{n} {what}{'s' if n != 1 else ''} queued or running on it: {then}")

    ghosts = Ghost.objects.filter(instrument=inst)
    runs = BacktestRun.objects.filter(instrument=inst)
    studies = Study.objects.filter(instrument=inst)
    counts = (
        ("ghost instances", ghosts.count()),
        ("signals", Signal.objects.filter(instrument=inst).count()),
        ("revenue targets of its ghosts", RevenueTarget.objects.filter(ghost__instrument=inst).count()),
        ("closed paper positions", positions.count()),
        ("orders", Order.objects.filter(instrument=inst).count()),
        ("fills", Fill.objects.filter(order__instrument=inst).count()),
        ("P&L day rows", PnlDay.objects.filter(instrument=inst).count()),
        ("ghost ledger rows", GhostLedger.objects.filter(ghost__instrument=inst).count()),
        ("lab runs", runs.count()),
        ("lab run signals and trades", BacktestSignal.objects.filter(run__instrument=inst).count()
         + BacktestTrade.objects.filter(run__instrument=inst).count()),
        ("parameter studies", studies.count()),
        ("study trials", Trial.objects.filter(study__instrument=inst).count()),
        ("1m candles", Candle.objects.filter(instrument=inst).count()),
        ("large trades", LargeTrade.objects.filter(instrument=inst).count()),
        ("liquidations", LiquidationEvent.objects.filter(instrument=inst).count()),
        ("history downloads", HistoryDownload.objects.filter(instrument=inst).count()),
        ("feed status", 1 if fs is not None else 0),
    )
    agg = positions.filter(status=Position.Status.CLOSED).aggregate(g=Sum("gross_pnl"), f=Sum("fees"))
    net = (agg["g"] or Decimal(0)) - (agg["f"] or Decimal(0))
    digest = hashlib.sha256(repr((inst.pk, counts)).encode()).hexdigest()[:16]
    return DeletePlan(instrument=inst, refusals=tuple(refusals), counts=counts,
                      ghosts=tuple(ghosts.order_by("name").values_list("name", flat=True)), realised_net=net,
                      comes_back=_comes_back(inst), token=digest)


@transaction.atomic
def instrument_delete(*, instrument_id: int, actor, confirm: str, token: str, reason: str = "") -> DeletePlan:
    """Delete an instrument and every row that points at it (see the module docstring), audited with the counts.

    `confirm` must be the instrument's name as the page shows it ("binance:ETH/USDT") and `token` the plan's token
    the operator saw: rows that appeared since then are not deleted unseen. Raises InstrumentDeleteError with the
    reason, Instrument.DoesNotExist when there is none. The feed row is locked first, so a start racing this
    delete waits for it (and then finds no instrument)."""
    inst = Instrument.objects.select_for_update().select_related("exchange").get(pk=instrument_id)
    FeedStatus.objects.select_for_update().filter(instrument=inst).first()
    plan = instrument_delete_plan(instrument_id=inst.pk)
    if plan.refusals:
        raise InstrumentDeleteError("; ".join(plan.refusals))
    if (confirm or "").strip() != plan.name:
        raise InstrumentDeleteError(f"type {plan.name} to confirm the delete")
    if token != plan.token:
        raise InstrumentDeleteError("its rows changed since the page was shown (new signals, candles or runs): "
                                    "check the new counts and confirm again")
    audit_record(actor=actor, action="instrument.deleted", obj=inst, reason=(reason or "").strip()[:500],
                 before={"instrument": plan.name, "market_type": inst.market_type, "ghosts": list(plan.ghosts),
                         "rows": dict(plan.counts), "realised_net": format(plan.realised_net.normalize(), "f")})
    # children first: trading rows PROTECT their parents (fills -> orders -> positions -> signals, ghosts)
    Fill.objects.filter(order__instrument=inst).delete()
    Order.objects.filter(instrument=inst).delete()
    Position.objects.filter(instrument=inst).delete()
    Signal.objects.filter(instrument=inst).delete()
    Ghost.objects.filter(instrument=inst).delete()  # targets, ledgers and P&L days cascade
    BacktestRun.objects.filter(instrument=inst).delete()  # their signals and trades cascade
    Study.objects.filter(instrument=inst).delete()  # trials cascade
    inst.delete()  # candles, large trades, liquidations, downloads, P&L days, the feed status cascade
    return plan
