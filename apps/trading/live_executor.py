"""Live trading, what the desk sends: entries, exits and stop moves as orders on the exchange.

Entries: a market order under the client id derived from the signal (apps.trading.live_client), recorded by
apps.trading.live_records, then protected by a stop on the exchange (apps.trading.live_protect).

Exits: MARKET orders on price checks, with a protective stop resting on the exchange underneath. The feed
checks stops, targets and time stops on every trade (`positions_check_price`); live exits use the same
decision (`apps.engine.exits.tick_exit`) so paper and live close on the same prices, and it works the same on
every exchange. Targets therefore fill as taker market orders, not at the target price. While the desk (feed
+ worker) is down, the exchange's protective stop at the position's stop is what protects it
(apps.trading.live_protect: placed after the entry, moved with the stop, cancelled before the desk's exit,
and when that cancel finds it filled the position closes from the stop's fill; reconciliation checks it).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal

from django.core.cache import cache
from django.db import transaction

from apps.audit.services import audit_record
from apps.engine.fills import fill_model_for
from apps.engine.lots import lot_size
from apps.engine.sizing import position_size, quantity_at_fill
from apps.signals.models import Fate, Side, Signal
from apps.signals.services import signal_set_fate
from apps.trading import selectors
from apps.trading.live_client import (
    STEP,
    LiveTradingRefused,
    client_order_id,
    exchange_client_id,
    live_exchange,
    order_place_market,
    order_settled,
)
from apps.trading.live_protect import protect_cancel, protect_sync
from apps.trading.live_records import entry_record, exit_record
from apps.trading.lot_rules import lot_rules_from_market
from apps.trading.models import ExitReason, Mode, Order, Position
from apps.trading.risk_selectors import risk_limits

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- one actor per position on the exchange

GUARD_TTL_S = 120  # longer than any one exit or stop check (3 attempts with backoff, fill polls): a killed holder's
# guard lapses by itself
GUARD_WAIT_S = 10.0  # a stop move or an entry's stop waits this long for another process's check of the position
EXIT_WAIT_S = 5.0  # an exit waits less: the feed's next price check fires it again


def _guard_key(position_id: int) -> str:
    return f"live:position-guard:{position_id}"


@contextmanager
def position_guard(position_id: int, *, wait_s: float) -> Iterator[bool]:
    """One process at a time sends or checks a live position's orders on the exchange (exit, stop move, stop
    check). Without it the stop watch could read the stop the exit had just cancelled as "missing" and place a
    new one under the exit's market sell: a spot stop holding coins that are gone, or a second sell. A Redis
    key (the cache) held for GUARD_TTL_S at most; yields False when another holder kept it past `wait_s`.
    Redis unreachable: yields True (the guard is a safety net; an exit must not wait for Redis)."""
    key, token = _guard_key(position_id), uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    try:
        while not cache.add(key, token, GUARD_TTL_S):
            if time.monotonic() >= deadline:
                held = False
                break
            time.sleep(0.05)
        else:
            held = True
    except Exception as exc:
        log.warning("position guard %s: cache unreachable (%s); acting without it", position_id, type(exc).__name__)
        yield True
        return
    try:
        yield held
    finally:
        if held:
            try:
                if cache.get(key) == token:  # ours still (not lapsed and taken by another)
                    cache.delete(key)
            except Exception:  # lapses by itself within GUARD_TTL_S
                log.warning("position guard %s not released; it lapses in %s s", position_id, GUARD_TTL_S)


# ---------------------------------------------------------------- entries


def _refuse(signal_id: int, fate: str, detail: str) -> None:
    with transaction.atomic():
        signal = Signal.objects.select_for_update().get(pk=signal_id)
        if signal.fate == Fate.PENDING:
            signal_set_fate(signal=signal, fate=fate, detail=detail)


def _entry_amount(signal: Signal, ex, market: dict, price: Decimal, quantity: float | None) -> tuple[float, str]:
    """Order amount after the exchange's lot step, or (0, why) when it cannot be traded."""
    sign = 1 if signal.side == Side.LONG else -1
    if market.get("spot") and sign < 0:
        return 0.0, "spot market cannot be shorted live (no margin borrowing here)"
    expected = fill_model_for(signal.instrument.exchange.code).fill_price(sign, float(price))
    if quantity is not None:
        # sized at the reference entry; keep that notional at the expected fill, as paper and the backtest do
        quantity = quantity_at_fill(quantity, float(signal.entry), expected)
    else:
        limits = risk_limits()
        stop = float(signal.stop) * expected / float(signal.entry)
        quantity = position_size(float(selectors.equity()), expected, stop,
                                 risk_pct=limits.risk_per_trade_pct / 100,
                                 max_notional_pct=limits.max_notional_pct / 100,
                                 size_mult=float(signal.size_multiplier))
    if not quantity or quantity <= 0:
        return 0.0, "size is zero at the current equity"
    # The exchange's own rules right now (its market dict), read as the paper executor reads the stored ones
    # (apps.engine.lots): the same rounding, the same refusal words.
    rules = lot_rules_from_market(market, label=f"{market['symbol']} on {ex.id}",
                                  precision_mode=getattr(ex, "precisionMode", None))
    if rules.contract and (rules.inverse or rules.contract_size != 1):
        # the live ledger books the exchange's filled amount as base units (apps.trading.live_records)
        return 0.0, (f"lot: {rules.label} counts orders in contracts of {rules.contract_size} "
                     f"{'quote' if rules.inverse else 'base'} units; live orders are booked in base units, so only "
                     f"spot and 1-unit linear contracts trade live")
    lot = lot_size(quantity, expected, rules)
    if not lot.ok:
        return 0.0, f"lot: {lot.detail}"
    amount = float(ex.amount_to_precision(market["symbol"], float(lot.amount)))  # already on the step: unchanged
    return amount, ""


def signal_execute_live(*, signal_id: int, price: Decimal, at: datetime, quantity: float | None = None
                        ) -> Position | None:
    """Open a live position for a pending signal with a market order; the same gates and fates as paper.

    No database lock is held during the network call (SQLite would block every writer for its length):
    the signal is checked, the order placed (or found) under its derived client id, then recorded in one
    transaction that re-checks. Running this twice places one order and records one position.
    `price` is the latest trade price, used for sizing and the minimum-notional check only; the fill
    price is the exchange's.
    """
    signal = Signal.objects.select_related("ghost", "instrument__exchange").get(pk=signal_id)
    if signal.fate != Fate.PENDING:
        return None
    code = signal.instrument.exchange.code
    try:
        ex = live_exchange(code, symbol=signal.instrument.symbol)
    except LiveTradingRefused as exc:
        log.error("%s", exc)
        _refuse(signal_id, Fate.BLOCKED_RISK, str(exc))
        return None
    if not signal.ghost.enabled:
        _refuse(signal_id, Fate.GHOST_DISABLED, "ghost was disabled before the order")
        return None
    if Position.objects.filter(ghost_id=signal.ghost_id, status=Position.Status.OPEN).exists():
        _refuse(signal_id, Fate.POSITION_OPEN, "ghost already holds a position; not reversed")
        return None
    market = ex.market(signal.instrument.symbol)
    amount, why = _entry_amount(signal, ex, market, price, quantity)
    if amount <= 0:
        _refuse(signal_id, Fate.BLOCKED_RISK, why)
        return None
    ecid = exchange_client_id(code, client_order_id(signal_id, Order.Purpose.ENTRY))
    side = "buy" if signal.side == Side.LONG else "sell"
    order, how = order_place_market(ex, symbol=market["symbol"], side=side, amount=amount, ecid=ecid)
    order = order_settled(ex, market["symbol"], order, ecid)
    position = entry_record(signal_id=signal_id, order=order, how=how, ex=ex, market=market)
    _protect_after_entry(position, ex, market)
    return Position.objects.get(pk=position.pk)


def _protect_after_entry(position: Position, ex, market: dict) -> None:
    """The protective stop on the exchange (apps.trading.live_protect). The entry stands whatever happens
    here: a failure is logged and reconciliation places the stop."""
    try:
        outcome, detail = protect_position(position.pk, ex=ex, market=market)
    except Exception:
        log.exception("protective stop of live position %s not placed; reconcile places it", position.pk)
        return
    (log.info if outcome in ("placed", "kept") else log.error)("entry %s: %s", outcome, detail)


def _exit_amount(ex, position: Position, market: dict, cap: float | None = None) -> float:
    """What to sell/buy back: the position's quantity, or for a spot long what the account holds of it
    (the buy commission was paid in the base asset), after the exchange's lot step. `cap`: what the
    position's protective stop was placed for (what it holds, less what the stop sold)."""
    qty = float(position.quantity) if cap is None else min(float(position.quantity), cap)
    if market.get("spot"):
        free = (ex.fetch_balance().get("free") or {}).get(market["base"])
        if free is not None:
            qty = min(qty, float(free))
    return float(ex.amount_to_precision(market["symbol"], qty))


def position_close_live(*, position_id: int, price: float, at: datetime, reason: str) -> Position | None:
    """Close a live position with a market order (client id hft-<signal id>-exit). `price` is the level
    the exit rule fired at, kept in the audit row; the fill price is the exchange's. A closed position is
    left alone, so a repeat is a no-op. While another process acts on the position's orders (the stop watch,
    a stop move) the exit waits for it up to EXIT_WAIT_S, else returns None: the next price check exits."""
    with position_guard(position_id, wait_s=EXIT_WAIT_S) as held:
        if not held:
            log.warning("live position %s: its orders are busy in another process; the %s exit is left to the next "
                        "price check", position_id, reason)
            return None
        return _close_live(position_id=position_id, price=price, at=at, reason=reason)


def _close_live(*, position_id: int, price: float, at: datetime, reason: str) -> Position | None:
    position = Position.objects.select_related("instrument__exchange").get(pk=position_id)
    if position.status != Position.Status.OPEN:
        return None
    code = position.instrument.exchange.code
    ex = live_exchange(code, symbol=position.instrument.symbol)
    market = ex.market(position.instrument.symbol)
    # The protective stop first: it holds the coins this exit sells, and it may have filled already.
    stop_part, cap = None, None
    stop_row = Order.objects.filter(position_id=position_id, purpose=Order.Purpose.PROTECT,
                                    status=Order.Status.NEW).first()
    if stop_row is not None:
        cap = float(stop_row.quantity)
        final = protect_cancel(ex, market["symbol"], exchange_client_id(code, stop_row.client_order_id))
        if final is not None and float(final.get("filled") or 0) > 0:
            stop_part = (stop_row, final)
            cap = float(stop_row.quantity - Decimal(repr(float(final["filled"]))))  # exact: no float dust
        else:
            Order.objects.filter(pk=stop_row.pk).update(status=Order.Status.CANCELLED)
    amount = None
    if stop_part is not None and stop_part[1].get("status") != "closed":  # partly filled, then cancelled
        import ccxt

        try:
            amount = _exit_amount(ex, position, market, cap) if cap > 0 else 0.0
        except ccxt.InvalidOrder:  # below the amount precision: nothing left to sell
            amount = 0.0
    min_amount = (market.get("limits", {}).get("amount") or {}).get("min") or 0
    if stop_part is not None and (amount is None or amount <= 0 or amount < min_amount):
        # The exchange's stop filled first (all of it, or all but dust): that fill is the exit, nothing is sold.
        log.info("live position %s: its protective stop filled on the exchange before the %s exit", position_id,
                 reason)
        return exit_record(position_id=position_id, order=stop_part[1], how="stop filled on the exchange", ex=ex,
                           market=market, reason=ExitReason.STOP, trigger_price=price, db_order=stop_part[0])
    if amount is None:
        amount = _exit_amount(ex, position, market, cap)
    ecid = exchange_client_id(code, client_order_id(position.signal_id, Order.Purpose.EXIT))
    side = "sell" if position.side == Side.LONG else "buy"
    order, how = order_place_market(ex, symbol=market["symbol"], side=side, amount=amount, ecid=ecid,
                                    reduce_only=bool(market.get("contract")))
    order = order_settled(ex, market["symbol"], order, ecid)
    return exit_record(position_id=position_id, order=order, how=how, ex=ex, market=market, reason=reason,
                       trigger_price=price, stop_part=stop_part)


# ---------------------------------------------------------------- protective stops and stop moves


def protect_position(position_id: int, *, ex=None, market: dict | None = None,
                     how: str = "stop filled on the exchange", wait_s: float = GUARD_WAIT_S) -> tuple[str, str]:
    """`live_protect.protect_sync` under the position's guard, and when the price is already through the stop
    (the exchange refused it as immediately triggering: outcome "crossed") the position is closed at market
    with reason stop, which is what the desk's own rule does at that price. The close is here, not in
    live_protect, so that live_protect never imports the executor (issue 13: no import circles). Outcome
    "busy": another process held the position's guard for longer than `wait_s`; nothing was done."""
    with position_guard(position_id, wait_s=wait_s) as held:
        if not held:
            return "busy", f"position #{position_id}: its orders are busy in another process; not checked now"
        outcome, detail = protect_sync(position_id, ex=ex, market=market, how=how)
    if outcome != "crossed":
        return outcome, detail
    position = Position.objects.get(pk=position_id)
    log.warning("position %s: the price is through its stop %s; closing at market", position_id, position.stop)
    closed = position_close_live(position_id=position_id, price=float(position.stop), at=datetime.now(tz=UTC),
                                 reason=ExitReason.STOP)
    return outcome, f"{detail}: {'closed at market' if closed is not None else 'close attempted'}"


def position_stop_move(*, position_id: int, stop: Decimal, actor=None, reason: str = "") -> Position | None:
    """Move an open position's stop (paper or live); a live position's exchange stop follows at once.
    Returns the position as it is afterwards (closed when the new stop was already crossed), None when it
    was not open."""
    from apps.market.prices import positions_changed

    with transaction.atomic():
        position = Position.objects.select_for_update().get(pk=position_id)
        if position.status != Position.Status.OPEN:
            return None
        before = position.stop
        position.stop = Decimal(stop).quantize(STEP)
        position.save(update_fields=["stop", "updated_at"])
        audit_record(actor=actor, action="position.stop_moved", obj=position, reason=reason,
                     before={"stop": str(before)}, after={"stop": str(position.stop)})
    positions_changed(position.instrument_id)  # the feeds' stop/target caches
    if position.mode == Mode.LIVE:
        outcome, detail = protect_position(position.pk)
        log.info("stop of position %s moved %s -> %s: %s %s", position.pk, before, position.stop, outcome, detail)
    return Position.objects.get(pk=position_id)
