"""Paper execution: fills from the engine's fill model, positions managed on every price update.

Orders follow the instrument's lot rules from ccxt (apps.engine.lots, apps.trading.lot_rules): the quantity is
rounded down to the amount step (in contracts on contract markets), the fill, stop and target prices to the tick,
and an entry below the minimum quantity or notional is refused with the reason on the signal. An instrument whose
market was never looked up has no rules: nothing is rounded beyond the ledger's 1e-8.

The ledger (Fill rows) is the truth. Realised P&L is also counted into the day rows
(`apps.revenue.pnl_days`) in the closing transaction, so reads never sum the whole ledger.
"""

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction

from apps.alerts.services import alert_fill
from apps.audit.services import audit_record
from apps.common.realtime import send_on_commit
from apps.engine.fills import fill_model_for
from apps.engine.lots import lot_size, price_round
from apps.engine.sizing import position_size, quantity_at_fill
from apps.ghosts.models import Ghost
from apps.market.prices import positions_changed
from apps.revenue.pnl_days import pnl_days_add
from apps.signals.models import Fate, Side, Signal
from apps.signals.services import signal_set_fate
from apps.trading import selectors
from apps.trading.events import PORTFOLIO_GROUP, trade_payload
from apps.trading.lot_rules import lot_rules
from apps.trading.models import ExitReason, Fill, Order, Position
from apps.trading.risk_selectors import risk_limits

log = logging.getLogger(__name__)
QTY_STEP = Decimal("0.00000001")  # 1e-8 base units: below any exchange's lot step
PRICE_STEP = Decimal("0.00000001")
MONEY_STEP = Decimal("0.00000001")


def _d(x: float, step: Decimal = PRICE_STEP) -> Decimal:
    return Decimal(repr(float(x))).quantize(step)


def _sign(side: str) -> int:
    return 1 if side == Side.LONG else -1


def fill_push(position: Position, fill: Fill, purpose: str) -> None:
    """After commit: the fill to browsers, the P&L refreshed, the fill alert (paper and live alike), and the
    instrument's feed told to reload its open positions (a manual close or a flatten left the closed one in the
    feed's stop cache, where it also read as marks still moving: apps.runtime.pipeline.FeedPipeline._pnl_due)."""
    send_on_commit(PORTFOLIO_GROUP, trade_payload(position, fill, purpose))
    transaction.on_commit(selectors.pnl_push)
    instrument_id = position.instrument_id
    transaction.on_commit(lambda: positions_changed(instrument_id))
    alert_fill(position=position, fill=fill, purpose=purpose)  # after commit; never raises


def _filled_order(position: Position, purpose: str, *, buy: bool, price: Decimal, fee: Decimal,
                  at: datetime) -> Fill:
    """A paper order filled at once. The client order id derives from the signal id, so a retried
    task hits the unique constraint instead of trading twice (the same id goes to the exchange live)."""
    order = Order.objects.create(
        position=position, instrument=position.instrument, client_order_id=f"hft-{position.signal_id}-{purpose}",
        purpose=purpose, side="buy" if buy else "sell", quantity=position.quantity, status=Order.Status.FILLED,
    )
    return Fill.objects.create(order=order, price=price, quantity=position.quantity, fee=fee, filled_at=at)


@transaction.atomic
def signal_execute_paper(
    *, signal_id: int, price: Decimal, at: datetime, quantity: float | None = None
) -> Position | None:
    """Open a paper position for a pending signal at `price` (the first price after the signal's bar closed).

    `quantity` is the signal manager's risk-checked size at the signal's reference entry; the position
    keeps its notional at the fill price (qty = quantity x entry / fill). Without it the size follows the
    desk's risk limits at the current equity, from the fill price and the re-anchored stop.
    Safe to run twice: only a PENDING signal proceeds; the position is
    one-to-one with the signal and the client order id is derived from the signal id.
    """
    signal = (
        Signal.objects.select_for_update().select_related("ghost", "instrument__exchange").get(pk=signal_id)
    )
    if signal.fate != Fate.PENDING:
        return None
    ghost: Ghost = signal.ghost
    if not ghost.enabled:
        signal_set_fate(signal=signal, fate=Fate.GHOST_DISABLED, detail="ghost was disabled before the fill")
        return None
    if Position.objects.filter(ghost=ghost, status=Position.Status.OPEN).exists():
        signal_set_fate(
            signal=signal, fate=Fate.POSITION_OPEN, detail="ghost already holds a position; not reversed"
        )
        return None
    model = fill_model_for(signal.instrument.exchange.code)
    rules = lot_rules(signal.instrument)
    sign = _sign(signal.side)
    fill_px = model.fill_price(sign, float(price))
    if rules.price_tick is not None:
        fill_px = float(price_round(fill_px, rules))  # a fill happens at a price on the book's tick grid
    # Stops and targets keep their distance from the reference entry, re-anchored on the real fill.
    ratio = fill_px / float(signal.entry)
    stop, target = float(signal.stop) * ratio, float(signal.target) * ratio
    if rules.price_tick is not None:
        # the stop away from the fill (never tighter than decided, never on the fill itself), the target nearest
        stop, target = float(price_round(stop, rules, away_from=fill_px)), float(price_round(target, rules))
    equity = float(selectors.equity())
    if quantity is not None:
        # The manager sized at the reference entry (the bar close); keep its notional at the fill price,
        # exactly as the backtest does (apps.engine.sizing.quantity_at_fill).
        quantity = quantity_at_fill(quantity, float(signal.entry), fill_px)
    else:
        limits = risk_limits()
        quantity = position_size(equity, fill_px, stop, risk_pct=limits.risk_per_trade_pct / 100,
                                 max_notional_pct=limits.max_notional_pct / 100,
                                 size_mult=float(signal.size_multiplier))
    if not quantity or quantity <= 0:
        signal_set_fate(signal=signal, fate=Fate.BLOCKED_RISK, detail=f"size is zero at equity {equity:.2f}")
        return None
    lot = lot_size(_d(quantity, QTY_STEP), fill_px, rules)
    if not lot.ok:
        # "lot: quantity 0.00001 below the minimum 0.0001 of BTC/USDT on binance" (the page names the limit)
        signal_set_fate(signal=signal, fate=Fate.BLOCKED_RISK, detail=f"lot: {lot.detail}")
        return None
    qty = lot.quantity
    fee = _d(model.fee(fill_px * float(qty)), MONEY_STEP)
    position = Position.objects.create(
        ghost=ghost,
        instrument=signal.instrument,
        signal=signal,
        side=signal.side,
        quantity=qty,
        entry_price=_d(fill_px),
        stop=_d(stop),
        target=_d(target),
        opened_at=at,
        fees=fee,
        time_stop_at=at + timedelta(seconds=signal.max_hold_seconds) if signal.max_hold_seconds else None,
    )
    fill = _filled_order(position, Order.Purpose.ENTRY, buy=sign > 0, price=position.entry_price, fee=fee, at=at)
    signal_set_fate(signal=signal, fate=Fate.TAKEN, detail=f"filled {qty} @ {position.entry_price}")
    audit_record(
        actor=None,
        action="position.opened",
        obj=position,
        after={"side": position.side, "qty": str(qty), "price": str(position.entry_price)},
        data_time=at,
    )
    fill_push(position, fill, "entry")
    return position


@transaction.atomic
def position_close(*, position_id: int, price: float, at: datetime, reason: str) -> Position | None:
    """Close at `price` (already the exit level chosen by the fill rules; slippage applies to stops and
    time exits, not to a resting target). A closed position is left alone, so a repeat is a no-op."""
    position = (
        Position.objects.select_for_update()
        .select_related("instrument__exchange", "ghost")
        .get(pk=position_id)
    )
    if position.status != Position.Status.OPEN:
        return None
    model = fill_model_for(position.instrument.exchange.code)
    sign = _sign(position.side)
    exit_px = price if reason == ExitReason.TARGET else model.fill_price(-sign, price)
    rules = lot_rules(position.instrument)
    if rules.price_tick is not None:
        exit_px = float(price_round(exit_px, rules))
    qty = position.quantity
    fee = _d(model.fee(exit_px * float(qty)), MONEY_STEP)
    fill = _filled_order(position, Order.Purpose.EXIT, buy=sign < 0, price=_d(exit_px), fee=fee, at=at)
    position.status = Position.Status.CLOSED
    position.closed_at, position.exit_price, position.exit_reason = at, fill.price, reason
    position.gross_pnl = ((fill.price - position.entry_price) * qty * sign).quantize(MONEY_STEP)
    position.fees = position.fees + fee
    position.save(
        update_fields=["status", "closed_at", "exit_price", "exit_reason", "gross_pnl", "fees", "updated_at"]
    )
    pnl_days_add(positions=[position])  # same transaction: the day rows never disagree with the ledger
    audit_record(
        actor=None,
        action="position.closed",
        obj=position,
        after={"reason": reason, "price": str(fill.price), "net_pnl": str(position.net_pnl)},
        data_time=at,
    )
    fill_push(position, fill, "exit")
    ghost_id = position.ghost_id
    transaction.on_commit(lambda: _review_after_close(ghost_id, at))
    return position


def _review_after_close(ghost_id: int, at: datetime) -> None:
    """Auto-disable rules are judged after each closed trade (an auto-disable's audit row keeps the close's data
    time); a failure there must never stop the feed."""
    from apps.revenue.services import ghost_review

    try:
        ghost_review(ghost_id=ghost_id, at=at)
    except Exception:
        log.exception("review of ghost %s after a close failed", ghost_id)
