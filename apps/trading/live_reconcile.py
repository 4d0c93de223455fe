"""Live trading, reconciliation: the exchange's orders, fills, protective stops and holdings compared with
the ledger, at worker start-up (`live_startup`, connected to Celery's worker_ready in apps.trading.tasks) and
on demand (`manage.py reconcile`). What can be recorded is recorded (apps.trading.live_records); the rest is
reported for a person, with an audit row per finding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from apps.audit.services import audit_record
from apps.market.models import Exchange, Instrument
from apps.signals.models import Side, Signal
from apps.trading.live_client import (
    LiveOrderUncertain,
    LiveTradingRefused,
    exchange_client_id,
    live_exchange,
    order_fetch_by_client_id,
    parse_client_id,
)
from apps.trading.live_executor import protect_position
from apps.trading.live_protect import protect_cancel
from apps.trading.live_records import (
    entry_fill_late,
    entry_record,
    entry_void,
    exit_record,
    protect_row_for_fill,
)
from apps.trading.models import ExitReason, Mode, Order, Position

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- reconciliation


@dataclass
class Finding:
    kind: str  # e.g. "recorded_missing_entry", "exchange_open_unknown", "db_open_missing"
    detail: str
    fixed: bool


@dataclass
class ReconcileReport:
    exchange: str
    findings: list[Finding] = field(default_factory=list)
    checked_orders: int = 0
    checked_positions: int = 0

    def add(self, kind: str, detail: str, *, fixed: bool) -> None:
        self.findings.append(Finding(kind, detail, fixed))
        (log.warning if not fixed else log.info)("reconcile %s: %s%s", self.exchange, detail,
                                                  " (fixed)" if fixed else " (NOT fixed: operator)")

    @property
    def unresolved(self) -> list[Finding]:
        return [f for f in self.findings if not f.fixed]

    def lines(self) -> list[str]:
        head = (f"{self.exchange}: {self.checked_orders} orders and {self.checked_positions} open positions "
                f"checked, {len(self.findings) - len(self.unresolved)} fixed, {len(self.unresolved)} to review")
        return [head] + [f"  [{'fixed' if f.fixed else 'REVIEW'}] {f.kind}: {f.detail}" for f in self.findings]


def reconcile_exchange_codes() -> list[str]:
    """Exchanges live trading touches: those of enabled ghosts' instruments, live open positions and live
    orders still open in the ledger."""
    codes = set(Instrument.objects.filter(ghosts__enabled=True).values_list("exchange__code", flat=True))
    codes |= set(Position.objects.filter(mode=Mode.LIVE, status=Position.Status.OPEN)
                 .values_list("instrument__exchange__code", flat=True))
    codes |= set(Order.objects.filter(mode=Mode.LIVE, status=Order.Status.NEW)
                 .values_list("instrument__exchange__code", flat=True))
    return sorted(codes)


def live_reconcile(*, exchange_code: str, since_hours: float = 48.0) -> ReconcileReport:
    """Compare the exchange's orders and holdings with the ledger; record what can be recorded, report the rest.

    1. Orders open on the exchange: ours and known (status new) are fine; ours but unknown to the ledger
       and foreign ones (manual) are reported, never cancelled automatically.
    2. Ledger orders still `new` (live): re-read by client id; filled -> recorded; gone or cancelled with
       nothing filled -> marked rejected (an entry's empty position is voided at zero P&L).
    3. Our orders of the last `since_hours` per traded symbol that filled but are missing from the ledger
       (the task died between the order and the record) -> recorded from the exchange's figures.
    4. Protective stops (apps.trading.live_protect.protect_sync) of every open live position: missing,
       cancelled or expired -> placed again; filled while the desk was down -> the position closed from the
       exchange's fill; out of step with the ledger's stop or holding -> moved. A stop of ours open on the
       exchange that is not the ledger's current one (step 1) is cancelled.
    5. Holdings: spot base balances must cover the open live longs; contract positions must match.
    Each finding writes an audit row (`reconcile.fixed` / `reconcile.mismatch`), one summary row per run.
    """
    ex = live_exchange(exchange_code)
    report = ReconcileReport(exchange=exchange_code)
    exchange_row = Exchange.objects.filter(code=exchange_code).first()
    instruments = list(Instrument.objects.filter(exchange__code=exchange_code).select_related("exchange"))
    symbols = [i.symbol for i in instruments if i.symbol in ex.markets]
    db_new = {exchange_client_id(exchange_code, o.client_order_id): o for o in
              Order.objects.filter(mode=Mode.LIVE, status=Order.Status.NEW, instrument__exchange__code=exchange_code)
              .select_related("position", "instrument")}
    known = {exchange_client_id(exchange_code, c) for c in
             Order.objects.filter(instrument__exchange__code=exchange_code).values_list("client_order_id", flat=True)}

    # 1. open on the exchange (futures keep conditional orders, our protective stops, in a list of their own)
    open_orders = ex.fetch_open_orders()
    for symbol in symbols:
        if ex.market(symbol).get("contract"):
            open_orders += ex.fetch_open_orders(symbol, None, None, {"trigger": True})
    report.checked_orders += len(open_orders)
    open_ids = {o.get("clientOrderId") for o in open_orders}
    for o in open_orders:
        ecid = o.get("clientOrderId")
        if ecid in db_new:
            continue
        what = f"{o['symbol']} {o['side']} {o['amount']} ({o['type']}, exchange order {o['id']}, client id {ecid})"
        parsed = parse_client_id(ecid)
        if parsed and parsed[1] == Order.Purpose.PROTECT and Position.objects.filter(signal_id=parsed[0]).exists():
            _reconcile_stale_stop(ex, report, o, what)
            continue
        if ecid in known:
            report.add("exchange_open_ledger_closed", f"open on the exchange but filled/rejected in the ledger: {what}",
                       fixed=False)
        elif parse_client_id(ecid):
            report.add("exchange_open_unknown", f"our client id, open on the exchange, not in the ledger: {what}",
                       fixed=False)
        else:
            report.add("exchange_open_foreign", f"order not placed by this desk, left alone: {what}", fixed=False)

    # 2. open in the ledger (protective stops: step 4)
    for ecid, db_order in db_new.items():
        if ecid in open_ids or db_order.purpose == Order.Purpose.PROTECT:
            continue
        report.checked_orders += 1
        _reconcile_ledger_order(ex, report, db_order, ecid)

    # 3. filled on the exchange, missing from the ledger
    since = int((datetime.now(tz=UTC) - timedelta(hours=since_hours)).timestamp() * 1000)
    for symbol in symbols:
        for o in ex.fetch_orders(symbol, since):
            ecid, parsed = o.get("clientOrderId"), parse_client_id(o.get("clientOrderId"))
            if parsed is None or ecid in known or not (o.get("filled") or 0) > 0 or o.get("status") == "open":
                continue
            report.checked_orders += 1
            _reconcile_missing_fill(ex, report, o, parsed)

    # 4. protective stops
    _reconcile_stops(ex, report, exchange_code)

    # 5. holdings
    _reconcile_holdings(ex, report, exchange_code)

    with transaction.atomic():
        for f in report.findings:
            audit_record(actor=None, action="reconcile.fixed" if f.fixed else "reconcile.mismatch",
                         obj=exchange_row or report, reason=f.detail[:2000], after={"kind": f.kind})
        audit_record(actor=None, action="reconcile.run", obj=exchange_row or report, after={
            "exchange": exchange_code, "sandbox": bool(settings.HFT_LIVE_SANDBOX),
            "orders_checked": report.checked_orders, "positions_checked": report.checked_positions,
            "fixed": len(report.findings) - len(report.unresolved), "to_review": len(report.unresolved),
        })
    for line in report.lines():
        (log.warning if report.unresolved else log.info)("%s", line)
    return report


def _reconcile_ledger_order(ex, report: ReconcileReport, db_order: Order, ecid: str) -> None:
    market = ex.market(db_order.instrument.symbol)
    found = order_fetch_by_client_id(ex, market["symbol"], ecid)
    what = f"ledger order {db_order.client_order_id} ({db_order.purpose} {db_order.side} {db_order.quantity})"
    if found is not None and (found.get("filled") or 0) > 0 and found.get("status") != "open":
        if db_order.purpose == Order.Purpose.ENTRY:
            entry_fill_late(ex=ex, db_order=db_order, order=found, market=market)
        else:
            exit_record(position_id=db_order.position_id, order=found, how="reconcile", ex=ex, market=market,
                        reason="manual", db_order=db_order)
        report.add("ledger_open_filled", f"{what} filled on the exchange: fill recorded", fixed=True)
        return
    state = "is not on the exchange" if found is None else f"is {found.get('status')} with nothing filled"
    voided = entry_void(db_order.pk)
    voided = f"; position #{voided.pk} had no fill and is voided at zero P&L" if voided is not None else ""
    report.add("ledger_open_missing", f"{what} {state}: marked rejected{voided}", fixed=True)


def _reconcile_missing_fill(ex, report: ReconcileReport, order: dict, parsed: tuple[int, str]) -> None:
    signal_id, purpose = parsed
    market = ex.market(order["symbol"])
    what = f"exchange order {order['id']} ({order.get('clientOrderId')}, {order['side']} {order['filled']})"
    signal = Signal.objects.filter(pk=signal_id).first()
    if signal is None:
        report.add("exchange_fill_unknown_signal", f"{what}: signal {signal_id} is not in this database",
                   fixed=False)
        return
    if purpose == Order.Purpose.ENTRY:
        try:
            entry_record(signal_id=signal_id, order=order, how="reconcile", ex=ex, market=market)
        except Exception as exc:  # e.g. the ghost holds another position: a person must look
            report.add("exchange_fill_missing", f"{what}: could not record ({exc})", fixed=False)
            return
        report.add("exchange_fill_missing", f"{what}: entry recorded from the exchange", fixed=True)
        return
    position = Position.objects.filter(signal_id=signal_id, status=Position.Status.OPEN).first()
    if position is None:
        report.add("exchange_fill_missing", f"{what}: exit of a position that is not open", fixed=False)
        return
    if purpose == Order.Purpose.PROTECT:  # a stop of ours the ledger no longer names filled: it is the exit
        row = protect_row_for_fill(position, order)
        exit_record(position_id=position.pk, order=order, how="reconcile", ex=ex, market=market,
                    reason=ExitReason.STOP, db_order=row)
        report.add("exchange_fill_missing", f"{what}: protective stop fill recorded as the exit", fixed=True)
        return
    exit_record(position_id=position.pk, order=order, how="reconcile", ex=ex, market=market, reason="manual")
    report.add("exchange_fill_missing", f"{what}: exit recorded from the exchange", fixed=True)


# outcome of apps.trading.live_executor.protect_position -> fixed by reconcile (True) or for a person (False)
_STOP_OUTCOMES = {"placed": True, "moved": True, "filled": True, "crossed": True, "cancelled": True,
                  "unprotected": False, "uncertain": False, "partial": False, "double": False}


def _reconcile_stops(ex, report: ReconcileReport, exchange_code: str) -> None:
    positions = (Position.objects.filter(mode=Mode.LIVE, instrument__exchange__code=exchange_code)
                 .filter(Q(status=Position.Status.OPEN)
                         | Q(orders__purpose=Order.Purpose.PROTECT, orders__status=Order.Status.NEW))
                 .distinct().order_by("pk"))
    for position in positions:
        try:
            outcome, detail = protect_position(position.pk, ex=ex, how="reconcile: stop filled on the exchange")
        except Exception as exc:
            log.exception("protective stop of position %s", position.pk)
            outcome, detail = "error", f"position #{position.pk}: checking its protective stop failed ({exc!r})"
        if outcome in _STOP_OUTCOMES or outcome == "error":
            report.add(f"protect_{outcome}", detail, fixed=_STOP_OUTCOMES.get(outcome, False))


def _reconcile_stale_stop(ex, report: ReconcileReport, order: dict, what: str) -> None:
    """A protective stop of ours open on the exchange that the ledger does not name as current (replaced, or
    its position closed): it would sell coins a second time, so it is cancelled."""
    try:
        final = protect_cancel(ex, order["symbol"], order["clientOrderId"])
    except LiveOrderUncertain as exc:
        report.add("protect_stale", f"stale protective stop {what}: could not cancel ({exc})", fixed=False)
        return
    if final is not None and float(final.get("filled") or 0) > 0:
        report.add("protect_stale", f"stale protective stop {what} filled {final['filled']} before it could be "
                   "cancelled: a person must look", fixed=False)
        return
    report.add("protect_stale", f"stale protective stop {what}: cancelled", fixed=True)


def _reconcile_holdings(ex, report: ReconcileReport, exchange_code: str) -> None:
    positions = list(Position.objects.filter(mode=Mode.LIVE, status=Position.Status.OPEN,
                                             instrument__exchange__code=exchange_code).select_related("instrument"))
    report.checked_positions = len(positions)
    if not positions:
        return
    spot_need: dict[str, Decimal] = {}
    contracts: dict[str, Decimal] = {}
    for p in positions:
        market = ex.market(p.instrument.symbol)
        if market.get("spot"):
            spot_need[market["base"]] = spot_need.get(market["base"], Decimal(0)) + p.quantity
        else:
            sign = 1 if p.side == Side.LONG else -1
            contracts[market["symbol"]] = contracts.get(market["symbol"], Decimal(0)) + sign * p.quantity
    if spot_need:
        total = ex.fetch_balance().get("total") or {}
        for asset, need in spot_need.items():
            have = Decimal(repr(float(total.get(asset) or 0)))
            # The buy commission (base asset) leaves a long slightly short of its quantity: 1% tolerance.
            if have < need * Decimal("0.99"):
                report.add("holding_short", f"ledger holds {need} {asset} in open live longs; the account has {have}",
                           fixed=False)
    if contracts:  # not exercised by the offline tests (spot fake only)
        for pos in ex.fetch_positions(list(contracts)):
            size = Decimal(repr(float(pos.get("contracts") or 0))) * (1 if pos.get("side") == "long" else -1)
            size *= Decimal(repr(float(ex.market(pos["symbol"]).get("contractSize") or 1)))
            want = contracts.pop(pos["symbol"], Decimal(0))
            if abs(size - want) > abs(want) * Decimal("0.001"):
                report.add("position_mismatch", f"{pos['symbol']}: ledger {want}, exchange {size}", fixed=False)
        for symbol, want in contracts.items():
            report.add("position_mismatch", f"{symbol}: ledger {want}, exchange has no position", fixed=False)


def live_startup() -> list[ReconcileReport]:
    """Called when a worker starts: with live trading on, reconcile every exchange it touches, or say
    loudly why live trading is refused (the worker keeps running; every live order is refused the same way)."""
    if not settings.HFT_LIVE_TRADING:
        return []
    reports = []
    for code in reconcile_exchange_codes():
        try:
            reports.append(live_reconcile(exchange_code=code))
        except LiveTradingRefused as exc:
            log.critical("LIVE TRADING REFUSED: %s", exc)
        except Exception:
            log.exception("start-up reconciliation with %s failed; live orders there continue, review by hand", code)
    return reports

