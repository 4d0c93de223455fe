"""Live trading, the ledger side: live fills and closes written to the same Order/Fill/Position ledger as
paper trading (mode=live), each in one transaction. Nothing here talks to the exchange except for fee figures
(an order's trades when the order carries no fee). Every close of a live position goes through this module
(`exit_record`, `entry_void`), so what must happen on every close happens here.

Ledger. One Order (mode=live) and one Fill per exchange order: the average fill price, the filled
quantity, and the fee from the exchange (the order's `fees` or, when the order response has none, the
order's trades via `fetch_my_trades`), converted to the quote currency (a base-asset commission at the fill
price). A commission in a third asset (BNB) has no price here, so the exchange fill model's fee is charged
instead and the audit row says so. Spot longs pay the buy commission in BTC, so they hold slightly less
than they bought: the exit sells what the account holds (at most the position's quantity) and the gross
P&L is (exit - entry) x exit quantity x side, which with the entry fee converted at the entry price makes
the ledger equal the cash flows. Spot cannot be shorted: a short signal on a spot market is blocked.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction

from apps.audit.services import audit_record
from apps.engine.fills import fill_model_for
from apps.revenue.pnl_days import pnl_days_add
from apps.signals.models import Fate, Side, Signal
from apps.signals.services import signal_set_fate
from apps.trading.live_client import STEP, LiveOrderUncertain, client_order_id, ledger_client_id, to_step
from apps.trading.models import Fill, Mode, Order, Position
from apps.trading.services import _review_after_close, fill_push

log = logging.getLogger(__name__)


def _order_fee_quote(ex, order: dict, market: dict, avg: float) -> tuple[Decimal, str]:
    """The order's commission in the quote currency and where the figure came from."""
    fees = [f for f in (order.get("fees") or ([order["fee"]] if order.get("fee") else [])) if f.get("cost") is not None]
    source = "exchange order"
    if not fees:
        try:
            trades = ex.fetch_my_trades(market["symbol"], None, None, {"orderId": order["id"]})
        except Exception as exc:  # no fee figure is no reason to lose the fill: fall back below
            log.warning("fetch_my_trades for order %s failed: %s", order.get("id"), type(exc).__name__)
            trades = []
        fees = [t["fee"] for t in trades if t.get("fee") and t["fee"].get("cost") is not None]
        source = "exchange trades"
    total, unknown = Decimal(0), set()
    for f in fees:
        cost, cur = Decimal(repr(float(f["cost"]))), f.get("currency")
        if cur == market["quote"]:
            total += cost
        elif cur == market["base"]:
            total += cost * Decimal(repr(avg))
        else:
            unknown.add(str(cur))
    if not fees or unknown:
        model_fee = Decimal(repr(fill_model_for(ex.id).fee(avg * float(order["filled"]))))
        why = f"commission in {', '.join(sorted(unknown))} has no price here" if unknown else "exchange gave no fee"
        return model_fee.quantize(STEP), f"fill model ({why})"
    return total.quantize(STEP), source


def _fill_figures(ex, order: dict, market: dict) -> tuple[Decimal, Decimal, Decimal, str, datetime]:
    """(average price, filled quantity, fee in quote, fee source, exchange time) of a filled order."""
    filled = float(order.get("filled") or 0)
    avg = order.get("average") or (float(order["cost"]) / filled if order.get("cost") and filled else None)
    if not filled or not avg:
        raise LiveOrderUncertain(f"order {order.get('clientOrderId')} has no fill yet (status {order.get('status')})")
    fee, source = _order_fee_quote(ex, order, market, float(avg))
    ts = order.get("lastTradeTimestamp") or order.get("timestamp")
    at = datetime.fromtimestamp(ts / 1000, tz=UTC) if ts else datetime.now(tz=UTC)
    return to_step(avg), to_step(filled), fee, source, at



def entry_record(*, signal_id: int, order: dict, how: str, ex, market: dict) -> Position:
    """Record a filled exchange entry order as Position + Order + Fill (mode=live) in one transaction.

    The exchange's order is the truth: it is recorded even when the signal was meanwhile marked stale
    (the task that placed it died), and a position that already exists for the signal is returned as is.
    """
    avg, filled, fee, fee_source, at = _fill_figures(ex, order, market)
    with transaction.atomic():
        signal = Signal.objects.select_for_update().select_related("ghost", "instrument").get(pk=signal_id)
        existing = Position.objects.filter(signal_id=signal_id).first()
        if existing is not None:
            return existing
        ratio = avg / signal.entry  # stops and targets keep their distance, re-anchored on the real fill
        position = Position.objects.create(
            ghost=signal.ghost, instrument=signal.instrument, signal=signal, mode=Mode.LIVE, side=signal.side,
            quantity=filled, entry_price=avg, stop=(signal.stop * ratio).quantize(STEP),
            target=(signal.target * ratio).quantize(STEP), opened_at=at, fees=fee,
            time_stop_at=at + timedelta(seconds=signal.max_hold_seconds) if signal.max_hold_seconds else None,
        )
        db_order = Order.objects.create(
            position=position, instrument=signal.instrument,
            client_order_id=client_order_id(signal_id, Order.Purpose.ENTRY), purpose=Order.Purpose.ENTRY,
            side=order["side"], quantity=filled, mode=Mode.LIVE, status=Order.Status.FILLED,
        )
        fill = Fill.objects.create(order=db_order, price=avg, quantity=filled, fee=fee, filled_at=at)
        detail = f"live: filled {filled} @ {avg} (exchange order {order['id']})"
        if signal.fate != Fate.PENDING:
            detail += f"; was {signal.fate}: the exchange's fill wins"
        signal_set_fate(signal=signal, fate=Fate.TAKEN, detail=detail)
        audit_record(actor=None, action="position.opened", obj=position, data_time=at, after={
            "mode": "live", "side": position.side, "qty": str(filled), "price": str(avg), "fee": str(fee),
            "fee_source": fee_source, "exchange_order_id": str(order["id"]),
            "client_order_id": order.get("clientOrderId"), "obtained": how,
        })
        fill_push(position, fill, "entry")
    log.info("live entry recorded: signal %s, %s %s @ %s, fee %s (%s, %s)", signal_id, order["side"], filled, avg,
             fee, fee_source, how)
    return position


# ---------------------------------------------------------------- exits


def exit_record(*, position_id: int, order: dict, how: str, ex, market: dict, reason: str,
                trigger_price: float | None = None, db_order: Order | None = None,
                stop_part: tuple[Order, dict] | None = None) -> Position | None:
    """Record a filled exchange exit order and close the position, in one transaction. `db_order`: a ledger
    order still marked new (reconcile's exit, or the protective stop that filled) is completed instead of an
    exit row being written. `stop_part`: the protective stop's row and exchange order when it filled part of
    the position before the desk's exit sold the rest: both fills are the exit (price: their average)."""

    avg, filled, fee, fee_source, at = _fill_figures(ex, order, market)
    parts = [(db_order, order, avg, filled, fee)]
    if stop_part is not None:
        s_avg, s_filled, s_fee, _, s_at = _fill_figures(ex, stop_part[1], market)
        parts.append((stop_part[0], stop_part[1], s_avg, s_filled, s_fee))
        at = max(at, s_at)
    with transaction.atomic():
        position = Position.objects.select_for_update().get(pk=position_id)
        if position.status != Position.Status.OPEN:
            return None
        sign = 1 if position.side == Side.LONG else -1
        fills = []
        for row, exchange_order, p_avg, p_filled, p_fee in parts:
            if row is not None:
                row.status, row.quantity = Order.Status.FILLED, p_filled
                row.save(update_fields=["status", "quantity"])
            else:
                row = Order.objects.create(
                    position=position, instrument_id=position.instrument_id,
                    client_order_id=client_order_id(position.signal_id, Order.Purpose.EXIT),
                    purpose=Order.Purpose.EXIT, side=exchange_order["side"], quantity=p_filled, mode=Mode.LIVE,
                    status=Order.Status.FILLED,
                )
            fills.append(Fill.objects.create(order=row, price=p_avg, quantity=p_filled, fee=p_fee, filled_at=at))
        if stop_part is not None:
            gross = sum((p[2] - position.entry_price) * p[3] * sign for p in parts)
            filled, fee = sum(p[3] for p in parts), sum(p[4] for p in parts)
            avg = (sum(p[2] * p[3] for p in parts) / filled).quantize(STEP)
        else:
            gross = (avg - position.entry_price) * filled * sign
        fill = fills[0]
        position.status = Position.Status.CLOSED
        position.closed_at, position.exit_price, position.exit_reason = at, avg, reason
        # The exit quantity, not the entry's: see the module docstring (spot buy commission in base).
        position.gross_pnl = gross.quantize(STEP)
        position.fees = position.fees + fee
        position.save(update_fields=["status", "closed_at", "exit_price", "exit_reason", "gross_pnl", "fees",
                                     "updated_at"])
        pnl_days_add(positions=[position])  # the P&L day rows, in the closing transaction (issue 13)
        audit_record(actor=None, action="position.closed", obj=position, data_time=at, after={
            "mode": "live", "reason": reason, "trigger_price": None if trigger_price is None else str(trigger_price),
            "price": str(avg), "qty": str(filled), "fee": str(fee), "fee_source": fee_source,
            "exchange_order_id": str(order["id"]), "obtained": how, "net_pnl": str(position.net_pnl),
            **({"stop_order_id": str(stop_part[1]["id"]), "stop_qty": str(parts[1][3])} if stop_part else {}),
        })
        fill_push(position, fill, "exit")
        ghost_id = position.ghost_id
        transaction.on_commit(lambda: _review_after_close(ghost_id, at))
    return position




def entry_fill_late(*, ex, db_order: Order, order: dict, market: dict) -> None:
    """A ledger entry order still `new` that the exchange filled (found by reconciliation): fill it in and
    re-anchor the position on the real fill."""
    avg, filled, fee, fee_source, at = _fill_figures(ex, order, market)
    with transaction.atomic():
        row = Order.objects.select_for_update().get(pk=db_order.pk)
        position = Position.objects.select_for_update().get(pk=row.position_id)
        row.status, row.quantity = Order.Status.FILLED, filled
        row.save(update_fields=["status", "quantity"])
        Fill.objects.create(order=row, price=avg, quantity=filled, fee=fee, filled_at=at)
        ratio = avg / position.entry_price
        position.stop = (position.stop * ratio).quantize(STEP)
        position.target = (position.target * ratio).quantize(STEP)
        position.entry_price, position.quantity, position.fees = avg, filled, position.fees + fee
        position.save(update_fields=["stop", "target", "entry_price", "quantity", "fees", "updated_at"])
        audit_record(actor=None, action="position.entry_reconciled", obj=position, after={
            "price": str(avg), "qty": str(filled), "fee": str(fee), "fee_source": fee_source,
            "exchange_order_id": str(order["id"]),
        })


def entry_void(order_id: int) -> Position | None:
    """A ledger order still `new` that the exchange does not have (or cancelled with nothing filled) is marked
    rejected; when it was the entry of an open position with no fill at all, that position is closed at zero
    P&L (it never held anything). Returns the voided position, else None."""
    with transaction.atomic():
        row = Order.objects.select_for_update().get(pk=order_id)
        row.status = Order.Status.REJECTED
        row.save(update_fields=["status"])
        position = Position.objects.select_for_update().get(pk=row.position_id)
        if (row.purpose != Order.Purpose.ENTRY or position.status != Position.Status.OPEN
                or Fill.objects.filter(order__position=position).exists()):
            return None
        position.status, position.closed_at = Position.Status.CLOSED, datetime.now(tz=UTC)
        position.exit_price, position.exit_reason, position.gross_pnl = position.entry_price, "manual", 0
        position.save(update_fields=["status", "closed_at", "exit_price", "exit_reason", "gross_pnl", "updated_at"])
        pnl_days_add(positions=[position])  # a zero trade, but a trade: counted like the ledger counts it
    return position


def protect_row_for_fill(position: Position, order: dict) -> Order:
    """The ledger row of a protective stop of ours that filled while the ledger named another (or none) as
    current: the row is pointed at that exchange order so `exit_record` completes it as the exit."""
    with transaction.atomic():
        row, _ = Order.objects.select_for_update().update_or_create(
            position=position, purpose=Order.Purpose.PROTECT,
            defaults={"client_order_id": ledger_client_id(order["clientOrderId"]),
                      "instrument_id": position.instrument_id, "side": order["side"], "mode": Mode.LIVE,
                      "quantity": to_step(order["filled"]), "status": Order.Status.NEW})
    return row
