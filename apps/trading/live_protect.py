"""Protective stops on the exchange for live positions (issue 12, live trading safety).

Why. The desk's exits are market orders it fires on its own price checks (apps.trading.live_executor); while the desk
(feed + worker) is down nothing watches a live position. So every live position also has a stop order resting
ON THE EXCHANGE at the position's stop, for what the exit would sell: it fires when no process of this desk
runs. The desk keeps deciding its exits as before (paper and live close on the same prices); the exchange's
stop is the floor under them.

Which order. ccxt's unified `createOrder(symbol, type, side, amount, price, {"stopLossPrice": stop})` where
ccxt's `features[spot].createOrder.stopLossPrice` says the exchange takes one. On Binance spot ccxt turns it
into (binance.create_order_request, which checks the symbol's `orderTypes` from exchangeInfo):
- type "market" -> STOP_LOSS, a stop-market: it triggers at the stop and sells at market, so it always gets
  out. Chosen when the symbol lists STOP_LOSS in its orderTypes (recent Binance spot exchangeInfo does).
- type "limit" -> STOP_LOSS_LIMIT (price, stopPrice, timeInForce GTC), when the symbol lists only that (older
  listings, testnets, ccxt's `has["createStopMarketOrder"]` is False for binance): it triggers at the stop and
  rests a sell limit STOP_LIMIT_BAND (1 %) below it. A gap of more than that through the stop leaves it
  unfilled on the book; the desk's own exit then cancels it and sells at market, and reconcile reports it.
Not OCO: an OCO adds a take-profit leg at the target, which protects nothing, and changes how targets fill;
ccxt has no unified OCO for Binance spot (raw orderList endpoints, a client id per leg, cancel by list), and
moving the stop would replace the whole list.
Futures and perpetuals (issue 13): a reduce-only stop-market, `createOrder(symbol, "market", side, amount, None,
{"stopLossPrice": stop, "reduceOnly": True})`, where ccxt's features for that market type take a stopLossPrice and
the symbol lists STOP_MARKET. On Binance USDⓈ-M ccxt sends it to the Algo Service (POST /fapi/v1/algoOrder,
algoType CONDITIONAL, our client id as clientAlgoId); it is looked up and cancelled there (ccxt's trigger=True),
and once triggered its fill is on the market order it placed (`actualOrderId`, read by `stop_fetch`).
reduceOnly: a stop left behind can never open a position the other way. The amount is the position's quantity
(no commission is taken from it; the contract size of BTC/USDT:USDT is 1).

Record. One Order row per position, purpose "protect" (mode live): client_order_id is the current exchange
order's client id `hft-<signal id>-stop<n>`, n counting placements (Binance cannot change a stop's price in
place, so a moved stop is a new order, and a fresh id keeps the lookup-before-placing unambiguous);
trigger_price and quantity are what rests on the exchange; status new while it rests, cancelled once the desk
cancelled it, rejected when the exchange refused it, filled when it closed the position (its Fill is then the
exit fill). The row is written BEFORE the order is placed: a crash in between leaves a row that reconciliation
checks (not on the exchange -> placed again). A spot stop sells what the account holds of the position (the
buy commission was paid in the base asset), exactly what the desk's exit would sell.

Life cycle.
- Entry (`signal_execute_live`): `protect_sync` right after the entry is recorded.
- Stop moves (`live_executor.position_stop_move`): the ledger's stop, then the exchange's: the old order is
  cancelled, the new one placed (cancel first: on spot both would hold the same coins). A new stop the price is already
  through is refused by the exchange ("Stop price would trigger immediately."): the position is closed at
  market with reason stop, which is what the desk's own rule does at that price.
- Exit (`position_close_live`): the stop is cancelled first (it holds the coins the exit sells). If the cancel
  finds it FILLED, the exchange's stop won the race: the position is closed from that fill and no market order
  is sent; partly filled, both fills are the exit.
- Start-up reconciliation (`live_reconcile`): `protect_sync` for every open live position: missing, cancelled
  or expired -> placed again; filled while the desk was down -> the position closed from the exchange's fill;
  at another level or size than the ledger's -> moved. A stop of ours that no open position owns is cancelled.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.signals.models import Side
from apps.trading.live_client import (
    PLACE_ATTEMPTS,
    STEP,
    LiveOrderUncertain,
    client_order_id,
    exchange_client_id,
    live_exchange,
    order_fetch_by_client_id,
    order_place,
)
from apps.trading.live_records import exit_record
from apps.trading.models import ExitReason, Mode, Order, Position

log = logging.getLogger(__name__)
STOP_LIMIT_BAND = Decimal("0.01")  # a stop-limit's limit this far beyond its trigger (stop-market needs none)
STOP_RE = re.compile(r"stop(\d+)$")


def protect_client_id(signal_id: int, n: int) -> str:
    """The ledger's id of the n-th protective stop placed for a signal's position: hft-<signal id>-stop<n>."""
    return f"hft-{signal_id}-stop{n}"


def _placements(client_id: str | None) -> int:
    m = STOP_RE.search(client_id or "")
    return int(m.group(1)) if m else 0


def protect_plan(ex, market: dict) -> tuple[str | None, str]:
    """How a position on this market is protected on the exchange: ("market", "") for a stop-market, ("limit",
    "") for a stop-limit, or (None, why not)."""
    if market.get("contract"):
        return _contract_plan(ex, market)
    create = ((getattr(ex, "features", None) or {}).get("spot") or {}).get("createOrder") or {}
    if not create.get("stopLossPrice"):
        return None, f"ccxt's {ex.id} takes no stopLossPrice on spot orders"
    listed = (market.get("info") or {}).get("orderTypes")
    if listed is not None:  # Binance: what the symbol accepts, the list ccxt checks before sending
        if "STOP_LOSS" in listed:
            return "market", ""
        if "STOP_LOSS_LIMIT" in listed:
            return "limit", ""
        return None, f"{ex.id} lists no stop-loss order type for {market['symbol']}"
    if ex.has.get("createStopMarketOrder"):
        return "market", ""
    if ex.has.get("createStopLimitOrder"):
        return "limit", ""
    return None, f"ccxt's {ex.id} places neither stop-market nor stop-limit orders"


def _contract_plan(ex, market: dict) -> tuple[str | None, str]:
    """A futures/perpetual position: a reduce-only stop-market (Binance USDⓈ-M STOP_MARKET through its Algo
    Service) where ccxt takes a stopLossPrice for that market type and the symbol lists STOP_MARKET."""
    kind = "swap" if market.get("swap") else "future"
    sub = "linear" if market.get("linear") else "inverse"
    create = (((getattr(ex, "features", None) or {}).get(kind) or {}).get(sub) or {}).get("createOrder") or {}
    if not create.get("stopLossPrice"):
        return None, f"ccxt's {ex.id} takes no stopLossPrice on {sub} {kind} orders"
    listed = (market.get("info") or {}).get("orderTypes")
    if listed is not None and "STOP_MARKET" not in listed:
        return None, f"{ex.id} lists no STOP_MARKET order type for {market['symbol']}"
    return "market", ""


def _conditional(market: dict) -> dict:
    """ccxt extras that address a stop order: Binance futures keep conditional orders in their Algo Service
    (own ids and endpoints since Dec 2025), which ccxt reaches with trigger=True; spot stops are plain orders."""
    return {"trigger": True} if market.get("contract") else {}


def stop_fetch(ex, market: dict, ecid: str) -> dict | None:
    """The exchange's view of our stop order with client id `ecid` (None when it has none). A triggered futures
    stop (an algo order with `actualOrderId`) filled through the market order it placed in the matching engine:
    that order is returned, under the stop's client id, so its fill is read like a spot stop's."""
    symbol = market["symbol"]
    found = order_fetch_by_client_id(ex, symbol, ecid, _conditional(market))
    info = (found or {}).get("info") or {}
    actual = info.get("actualOrderId") if market.get("contract") else None
    if not actual or str(actual) == "0":
        if info.get("algoStatus") in ("TRIGGERING", "TRIGGERED"):
            # fired, but no order in the matching engine yet (or ever: Binance's demo venue has left stops in
            # TRIGGERING): neither working nor filled, so not placed again either; a person is told
            return {**found, "status": TRIGGERING, "filled": 0.0}
        return found
    placed = ex.fetch_order(str(actual), symbol)
    return {**placed, "clientOrderId": found.get("clientOrderId"), "triggerPrice": found.get("triggerPrice")}


TRIGGERING = "triggering"  # stop_fetch's status of a fired futures stop with no order in the matching engine


def _immediate(exc: Exception) -> bool:
    """The exchange refused a stop the price is already through. ccxt maps Binance's answer (spot -2010 "Stop
    price would trigger immediately.", futures -2021 "Order would immediately trigger.") to
    OrderImmediatelyFillable only on the exchange's own hosts, so the message is checked too."""
    import ccxt

    return isinstance(exc, ccxt.OrderImmediatelyFillable) or "immediately" in str(exc).lower()


def _filled(order: dict | None) -> float:
    return float((order or {}).get("filled") or 0)


def protect_row(position_id: int) -> Order | None:
    return Order.objects.filter(position_id=position_id, purpose=Order.Purpose.PROTECT).first()


def _row_status(row: Order, status: str) -> None:
    Order.objects.filter(pk=row.pk).update(status=status)
    row.status = status


def protect_cancel(ex, symbol: str, ecid: str) -> dict | None:
    """Cancel the order with this client id and return the exchange's final view of it: cancelled (with what
    filled before), filled (Binance answers a cancel of a filled order with -2011: the lookup says filled), or
    None when the exchange has no such order. Raises LiveOrderUncertain when it cannot tell."""
    import ccxt

    market = ex.market(symbol)
    last_error: Exception | None = None
    for attempt in range(PLACE_ATTEMPTS):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            try:
                ex.cancel_order(None, symbol, {"clientOrderId": ecid, **_conditional(market)})
            except ccxt.OrderNotFound:
                pass  # filled, already cancelled, or never placed: the lookup tells which
            except ccxt.NetworkError:
                raise
            except ccxt.ExchangeError as exc:  # refused for another reason: the lookup below decides
                last_error = exc
            found = stop_fetch(ex, market, ecid)
            if found is None or found.get("status") != "open":
                return found
            last_error = last_error or RuntimeError("still open after the cancel")
        except ccxt.NetworkError as exc:
            last_error = exc
        log.warning("cancelling protective stop %s (attempt %d/%d): %s", ecid, attempt + 1, PLACE_ATTEMPTS,
                    type(last_error).__name__)
    raise LiveOrderUncertain(f"could not cancel protective stop {ecid}: {last_error!r}")


def _entry_base_commission(ex, position: Position, market: dict) -> float:
    """The commission a spot long's entry paid in the base asset (Binance takes a buy's commission from the
    coins bought): the position holds that much less than its quantity. From the entry order's fees, or its
    trades when the order carries none (Binance's query-order does not)."""
    if not market.get("spot") or position.side != Side.LONG:
        return 0.0
    symbol = market["symbol"]
    entry = order_fetch_by_client_id(ex, symbol, exchange_client_id(ex.id, client_order_id(
        position.signal_id, Order.Purpose.ENTRY)))
    if entry is None:
        return 0.0  # not found: the free balance still caps the amount
    fees = [f for f in (entry.get("fees") or ([entry["fee"]] if entry.get("fee") else [])) if f.get("cost")]
    if not fees:
        trades = ex.fetch_my_trades(symbol, None, None, {"orderId": entry["id"]})
        fees = [t["fee"] for t in trades if t.get("fee") and t["fee"].get("cost") is not None]
    return sum(float(f["cost"]) for f in fees if f.get("currency") == market["base"])


def _stop_amount(ex, position: Position, market: dict) -> float:
    """What the stop sells: what the position holds (its quantity less a spot entry's base commission), at most
    the account's free balance of it (another position's coins are not this one's), after the lot step; 0 when
    below it. Called with no stop of the position resting (its coins are free)."""
    import ccxt

    qty = float(position.quantity) - _entry_base_commission(ex, position, market)
    if market.get("spot"):
        free = (ex.fetch_balance().get("free") or {}).get(market["base"])
        if free is not None:
            qty = min(qty, float(free))
    try:
        return float(ex.amount_to_precision(market["symbol"], qty)) if qty > 0 else 0.0
    except ccxt.InvalidOrder:  # below the amount precision
        return 0.0


def _audit(position: Position, action: str, **after: Any) -> None:
    audit_record(actor=None, action=action, obj=position, after={k: str(v) if isinstance(v, Decimal) else v
                                                                for k, v in after.items()})


UNPROTECTED_AUDIT_EVERY = timedelta(hours=6)  # the stop watch finds an unprotected position every run


def _unprotected(position: Position, why: str) -> tuple[str, str]:
    log.error("live position %s has NO protective stop on the exchange: %s", position.pk, why)
    recent = AuditEvent.objects.filter(action="position.unprotected", object_id=str(position.pk),
                                       created_at__gte=datetime.now(tz=UTC) - UNPROTECTED_AUDIT_EVERY)
    if not recent.filter(after__reason=why).exists():  # one row per reason and 6 h, not one per watch run
        with transaction.atomic():
            _audit(position, "position.unprotected", reason=why)
    return "unprotected", f"position #{position.pk}: no protective stop on the exchange ({why})"


def _place(ex, position: Position, market: dict, plan: str, row: Order | None) -> tuple[str, str]:
    """Write the row (next client id, trigger, amount; status new), then place the order (lookup first)."""
    import ccxt

    symbol = market["symbol"]
    amount = _stop_amount(ex, position, market)
    min_amount = (market.get("limits", {}).get("amount") or {}).get("min") or 0
    if amount <= 0 or amount < min_amount:
        return _unprotected(position, f"the holding ({amount}) is below {ex.id}'s minimum amount {min_amount}")
    sign = 1 if position.side == Side.LONG else -1
    trigger = Decimal(ex.price_to_precision(symbol, float(position.stop)))
    cid = protect_client_id(position.signal_id, _placements(row.client_order_id if row else None) + 1)
    side = "sell" if sign > 0 else "buy"
    with transaction.atomic():
        if row is None:
            row = Order.objects.create(
                position=position, instrument_id=position.instrument_id, client_order_id=cid,
                purpose=Order.Purpose.PROTECT, side=side, quantity=Decimal(repr(amount)).quantize(STEP),
                mode=Mode.LIVE, status=Order.Status.NEW, trigger_price=trigger)
        else:
            row.client_order_id, row.status, row.trigger_price = cid, Order.Status.NEW, trigger
            row.quantity = Decimal(repr(amount)).quantize(STEP)
            row.save(update_fields=["client_order_id", "status", "trigger_price", "quantity"])
    params: dict[str, Any] = {"stopLossPrice": str(trigger)}
    if market.get("contract"):  # it may only close the position, never open one the other way
        params["reduceOnly"] = True
    if plan == "market":
        kind, price = "market", None
    else:
        kind, price = "limit", float(ex.price_to_precision(symbol, float(trigger * (1 - sign * STOP_LIMIT_BAND))))
    ecid = exchange_client_id(ex.id, cid)
    try:
        order, how = order_place(ex, symbol=symbol, kind=kind, side=side, amount=amount, price=price, ecid=ecid,
                                 params=params, lookup=_conditional(market))
    except LiveOrderUncertain as exc:  # the row stays new: the order may exist; reconcile looks it up
        return "uncertain", f"position #{position.pk}: protective stop {cid} uncertain ({exc})"
    except ccxt.ExchangeError as exc:
        _row_status(row, Order.Status.REJECTED)
        if _immediate(exc):
            # The price is already through the stop: the desk's rule says out, now. The caller closes at market
            # (apps.trading.live_executor.protect_position): this module places and cancels stops only.
            return "crossed", f"position #{position.pk}: the price is through its stop {trigger}"
        # refused (insufficient balance, a filter): no stop on the exchange
        return _unprotected(position, f"the exchange refused stop {cid}: {exc}")
    info = order.get("info") or {}
    with transaction.atomic():
        _audit(position, "position.protected", client_order_id=cid, trigger=trigger, amount=repr(amount),
               limit=None if price is None else repr(price), order_type=info.get("type") or kind,
               exchange_order_id=str(order.get("id")), obtained=how)
    log.info("position %s protected on %s: %s %s %s @ stop %s (%s)", position.pk, ex.id, cid, side, amount,
             trigger, how)
    return "placed", f"position #{position.pk}: protective stop {cid} {side} {amount} at {trigger} placed"


def _closed_by_stop(ex, position: Position, row: Order, found: dict, market: dict, how: str
                    ) -> tuple[str, str]:
    """The stop filled on the exchange: the position is closed from that fill. A partial fill of a stop that
    is no longer working (cancelled or expired by the exchange) is left to a person."""
    remaining = float(found.get("amount") or 0) - _filled(found)
    min_amount = (market.get("limits", {}).get("amount") or {}).get("min") or 0
    if found.get("status") != "closed" and remaining >= max(min_amount, 1e-12):
        return "partial", (f"position #{position.pk}: protective stop {row.client_order_id} filled {found['filled']}"
                           f" of {found['amount']} and is {found.get('status')}: close the rest by hand")
    closed = exit_record(position_id=position.pk, order=found, how=how, ex=ex, market=market,
                         reason=ExitReason.STOP, db_order=row)
    if closed is None:
        return "none", ""
    return "filled", (f"position #{position.pk}: protective stop {row.client_order_id} filled {found['filled']} "
                      f"@ {closed.exit_price} on the exchange: position closed from that fill")


def protect_sync(position_id: int, *, ex=None, market: dict | None = None,
                 how: str = "stop filled on the exchange") -> tuple[str, str]:
    """Bring the exchange's protective stop of a live position in line with the ledger; returns (outcome,
    detail). Outcomes: kept (in step), placed, moved, filled (it had filled: the position is now closed
    from that fill), crossed (the price is through the stop: the
    exchange refused it; `live_executor.protect_position` then closes at market), cancelled (the position is
    closed: its stop was cancelled); needing a person: unprotected, uncertain, partial, double (the position
    closed by another order AND its stop filled). none: nothing to do (paper, or closed with no stop)."""
    position = Position.objects.select_related("instrument__exchange").get(pk=position_id)
    if position.mode != Mode.LIVE:
        return "none", ""
    row = protect_row(position.pk)
    if position.status != Position.Status.OPEN and (row is None or row.status != Order.Status.NEW):
        return "none", ""
    code = position.instrument.exchange.code
    ex = ex or live_exchange(code, symbol=position.instrument.symbol)
    market = market or ex.market(position.instrument.symbol)
    symbol = market["symbol"]
    found = None
    if row is not None and row.status == Order.Status.NEW:
        found = stop_fetch(ex, market, exchange_client_id(code, row.client_order_id))
    if position.status != Position.Status.OPEN:
        final = protect_cancel(ex, symbol, exchange_client_id(code, row.client_order_id)) if (
            found is not None and found.get("status") == "open") else found
        if _filled(final) > 0:
            return "double", (f"position #{position.pk} is closed in the ledger, yet its protective stop "
                              f"{row.client_order_id} filled {final['filled']} on the exchange")
        _row_status(row, Order.Status.CANCELLED)
        return "cancelled", f"position #{position.pk} is closed: its protective stop {row.client_order_id} cancelled"
    plan, why = protect_plan(ex, market)
    if plan is None:
        if row is None or row.status != Order.Status.NEW:
            return _unprotected(position, why)
    if row is None or row.status != Order.Status.NEW:
        return _place(ex, position, market, plan, row)
    if found is not None and _filled(found) > 0 and found.get("status") != "open":
        return _closed_by_stop(ex, position, row, found, market, how)
    if found is not None and found.get("status") == TRIGGERING:
        return "uncertain", (f"position #{position.pk}: protective stop {row.client_order_id} fired on the exchange "
                             f"({found['info'].get('algoStatus')}) but no order of it is in the book: check the "
                             "position on the exchange")
    if found is None or found.get("status") != "open":  # never placed, or cancelled/expired with no fill
        state = "not on the exchange" if found is None else found.get("status")
        old = row.client_order_id
        _row_status(row, Order.Status.CANCELLED)
        outcome, detail = _place(ex, position, market, plan, row) if plan else _unprotected(position, why)
        return outcome, f"{detail} (the previous stop {old} was {state})"
    if _filled(found) > 0:
        return "partial", (f"position #{position.pk}: protective stop {row.client_order_id} is partly filled "
                           f"({found['filled']} of {found['amount']}); the desk's exit sells the rest")
    trigger = Decimal(ex.price_to_precision(symbol, float(position.stop)))
    have = Decimal(str(found.get("triggerPrice") or 0))
    if have == trigger:  # its amount was decided when it was placed (what the position holds)
        return "kept", f"position #{position.pk}: protective stop {row.client_order_id} at {have} in step"
    final = protect_cancel(ex, symbol, exchange_client_id(code, row.client_order_id))
    if _filled(final) > 0:
        return _closed_by_stop(ex, position, row, final, market, how)
    old = row.client_order_id
    _row_status(row, Order.Status.CANCELLED)
    if plan is None:
        return _unprotected(position, why)
    outcome, detail = _place(ex, position, market, plan, row)
    if outcome == "placed":
        return "moved", f"{detail} (was {old} at {have})"
    return outcome, detail
