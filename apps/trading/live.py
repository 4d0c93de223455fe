"""Live execution through ccxt: market entries and exits with client order ids derived from the signal id,
recorded in the same Order/Fill/Position ledger as paper trading (mode=live), and start-up reconciliation.

When it runs. Only with `HFT_LIVE_TRADING=1` AND the exchange's keys in the environment
(`HFT_<EXCHANGE>_API_KEY` and `HFT_<EXCHANGE>_SECRET`, e.g. `HFT_BINANCE_API_KEY`). Anything else raises
`LiveTradingRefused` with the names of what is missing (never their values). The keys are read from the
environment when the ccxt client is built and live only in that object: never in the database, a log line,
an audit row or a page. `set_sandbox_mode(True)` (the exchange's testnet) is on unless `HFT_LIVE_SANDBOX=0`;
an exchange without a sandbox in ccxt is refused while sandbox mode is on.

No second order on retry. The client order id is `hft-<signal id>-entry` / `-exit` (the paper ledger's
ids; OKX, whose clOrdId is alphanumeric only, gets the same id without hyphens). Before placing, the order
is looked up by that client id and, when the exchange has it, recorded instead of placing again: Binance
enforces `newClientOrderId` uniqueness only among OPEN orders, so a filled market order would NOT be
rejected by a retry, and the rejection alone is no protection. The duplicate rejection (Binance
`{"code": -2010, "msg": "Duplicate order sent."}`) still covers the race where two tasks both missed the
order in the lookup: the loser fetches the order by client id and records that. A network error while
placing is retried (lookup first, so an order whose response was lost is found, not repeated); after the
last attempt the signal stays pending and `reconcile` records the order if the exchange has it.

Exits: MARKET orders on price checks, with a protective stop resting on the exchange underneath. The feed
checks stops, targets and time stops on every trade (`positions_check_price`); live exits use the same
decision (`apps.engine.exits.tick_exit`) so paper and live close on the same prices, and it works the same on
every exchange. Targets therefore fill as taker market orders, not at the target price. While the desk (feed
+ worker) is down, the exchange's protective stop at the position's stop is what protects it
(apps.trading.live_protect: placed after the entry, moved with the stop, cancelled before the desk's exit,
and when that cancel finds it filled the position closes from the stop's fill; reconciliation checks it).

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

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from apps.audit.services import audit_record
from apps.engine.fills import fill_model_for
from apps.engine.sizing import position_size, quantity_at_fill
from apps.market.models import Exchange, Instrument
from apps.signals.models import Fate, Side, Signal
from apps.signals.services import signal_set_fate
from apps.trading import selectors
from apps.trading.models import ExitReason, Fill, Mode, Order, Position
from apps.trading.risk_selectors import risk_limits
from apps.trading.services import _review_after_close, fill_push

log = logging.getLogger(__name__)
STEP = Decimal("0.00000001")  # the ledger's 1e-8 precision (price, quantity and money fields)
PLACE_ATTEMPTS = 3  # lookup + place rounds on network errors; backoff 0.5 s, 1 s (inside the 50 s task limit)
FILL_POLLS = (0.2, 0.5, 1.0)  # seconds between re-reads of a market order the exchange returned unfilled
CLIENT_ID_RE = re.compile(r"^hft-?(\d+)-?(entry|exit|stop\d+)$")
# ccxt logs every request's headers at DEBUG, and Binance's X-MBX-APIKEY header is the key. Live clients log
# through this logger, pinned at INFO so that LOG_LEVEL=DEBUG on the root never writes the key anywhere.
CCXT_LOG = logging.getLogger("apps.trading.live.ccxt")
CCXT_LOG.setLevel(logging.INFO)


class LiveTradingRefused(Exception):
    """Live trading was asked for but is not allowed or not configured. The message names what is
    missing (setting or environment variable names), never a secret."""


class LiveOrderUncertain(Exception):
    """The exchange could not be reached to place or find an order; nothing was recorded. `reconcile`
    records the order later if the exchange has it."""


# ---------------------------------------------------------------- configuration and the ccxt client


def credential_env_names(exchange_code: str) -> tuple[str, str]:
    """The environment variables holding an exchange's key and secret: HFT_<CODE>_API_KEY, HFT_<CODE>_SECRET."""
    code = re.sub(r"[^A-Z0-9]", "_", exchange_code.upper())
    return f"HFT_{code}_API_KEY", f"HFT_{code}_SECRET"


def live_check(exchange_code: str) -> None:
    """Raise LiveTradingRefused unless live trading is switched on and the exchange's keys are present."""
    if not settings.HFT_LIVE_TRADING:
        raise LiveTradingRefused("live trading is off: set HFT_LIVE_TRADING=1 to trade live (paper is the default)")
    missing = [name for name in credential_env_names(exchange_code) if not os.environ.get(name, "").strip()]
    if missing:
        raise LiveTradingRefused(
            f"live trading refused for {exchange_code}: {' and '.join(missing)} not set in the environment "
            "(keys are read only from the environment, never from the database)"
        )


_CLIENTS: dict[tuple, Any] = {}


def live_clients_clear() -> None:
    """Forget cached ccxt clients (tests change the sandbox setting or the URLs between cases)."""
    _CLIENTS.clear()


def live_exchange(exchange_code: str, *, symbol: str | None = None):
    """A sync ccxt client with the environment's keys, in sandbox mode unless HFT_LIVE_SANDBOX=0, markets
    loaded. Cached per process: one client per exchange keeps ccxt's nonce, rate limiter and markets.

    `settings.HFT_LIVE_CCXT_CONFIG` is deep-merged over our options AFTER sandbox mode is applied (tests
    point `urls.api` at a local server there); keys in it are ignored: they come only from the environment.
    """
    import ccxt

    from apps.market.exchanges import _deep_merge, exchange_options

    live_check(exchange_code)
    extra = {k: v for k, v in (settings.HFT_LIVE_CCXT_CONFIG or {}).items()
             if k not in ("apiKey", "secret", "password", "uid", "privateKey")}
    sandbox = bool(settings.HFT_LIVE_SANDBOX)
    cache_key = (exchange_code, symbol, sandbox, json.dumps(extra, sort_keys=True, default=str))
    if cache_key in _CLIENTS:
        return _CLIENTS[cache_key]
    if exchange_code not in ccxt.exchanges:
        raise LiveTradingRefused(f"unknown ccxt exchange id {exchange_code!r}")
    key_name, secret_name = credential_env_names(exchange_code)
    options = exchange_options(exchange_code, symbol)
    # fetchOpenOrders without a symbol is heavier (Binance weight 80 instead of 6) but is what reconcile
    # needs: an order on a symbol this desk does not trade is still ours to report.
    options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    urls = extra.pop("urls", None)
    config = _deep_merge({"enableRateLimit": True, "options": options}, extra)
    config |= {"apiKey": os.environ[key_name].strip(), "secret": os.environ[secret_name].strip()}
    ex = getattr(ccxt, exchange_code)(config)
    ex.logger = CCXT_LOG
    if sandbox:
        try:
            ex.set_sandbox_mode(True)
        except ccxt.NotSupported as exc:
            raise LiveTradingRefused(
                f"{exchange_code} has no sandbox/testnet in ccxt; live trading there needs HFT_LIVE_SANDBOX=0 "
                "(real money)"
            ) from exc
    if urls:
        ex.urls = _deep_merge(ex.urls, urls)
    ex.load_markets()
    _CLIENTS[cache_key] = ex
    return ex


# ---------------------------------------------------------------- client order ids


def client_order_id(signal_id: int, purpose: str) -> str:
    """The ledger's client order id (paper and live alike): hft-<signal id>-<entry|exit>."""
    return f"hft-{signal_id}-{purpose}"


def exchange_client_id(exchange_code: str, cid: str) -> str:
    """The id sent to the exchange. OKX's clOrdId allows letters and digits only (1-32 chars)."""
    return cid.replace("-", "") if exchange_code == "okx" else cid


def ledger_client_id(exchange_id: str) -> str:
    """The ledger's id of an order this desk sent (OKX's ids have no hyphens)."""
    m = CLIENT_ID_RE.match(exchange_id)
    return f"hft-{m.group(1)}-{m.group(2)}" if m else exchange_id


def parse_client_id(exchange_id: str | None) -> tuple[int, str] | None:
    """(signal id, purpose) for an id this desk sent, None for a foreign one (a manual order). A protective
    stop's id (hft-<signal id>-stop<n>, apps.trading.live_protect) has purpose "protect"."""
    m = CLIENT_ID_RE.match(exchange_id or "")
    if not m:
        return None
    return int(m.group(1)), Order.Purpose.PROTECT if m.group(2).startswith("stop") else m.group(2)


# ---------------------------------------------------------------- orders on the exchange


def _is_duplicate(exc: Exception) -> bool:
    import ccxt

    # ccxt 4.5.90 maps Binance -2010 (NEW_ORDER_REJECTED, shared with e.g. insufficient balance) to
    # InvalidOrder; only the message tells a duplicate client id apart.
    return isinstance(exc, ccxt.DuplicateOrderId) or "duplicate" in str(exc).lower()


def order_fetch_by_client_id(ex, symbol: str, ecid: str) -> dict | None:
    """The exchange's order with this client id, or None when it has none (Binance -2013)."""
    import ccxt

    try:
        return ex.fetch_order(None, symbol, {"clientOrderId": ecid})
    except ccxt.OrderNotFound:
        return None


def order_place_market(ex, *, symbol: str, side: str, amount: float, ecid: str,
                       reduce_only: bool = False) -> tuple[dict, str]:
    """Exactly one market order with client id `ecid`, however often this is called: returns the ccxt order
    and how it was obtained ("placed", "found" by the lookup before placing, "duplicate" after the
    exchange rejected our id as already used). Raises LiveOrderUncertain after PLACE_ATTEMPTS network errors.
    """
    return order_place(ex, symbol=symbol, kind="market", side=side, amount=amount, ecid=ecid,
                       params={"reduceOnly": True} if reduce_only else None)


def order_place(ex, *, symbol: str, kind: str, side: str, amount: float, ecid: str, price: float | None = None,
                params: dict | None = None) -> tuple[dict, str]:
    """Exactly one order of ccxt type `kind` with client id `ecid` (see order_place_market); `params` are
    ccxt's unified extras (a protective stop's stopLossPrice). Exchange refusals other than a duplicate id
    are raised as ccxt gives them."""
    import ccxt

    params = {**(params or {}), "clientOrderId": ecid}
    last_error: Exception | None = None
    for attempt in range(PLACE_ATTEMPTS):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            existing = order_fetch_by_client_id(ex, symbol, ecid)
            if existing is not None:
                return existing, "found"
            try:
                return ex.create_order(symbol, kind, side, amount, price, params), "placed"
            except ccxt.ExchangeError as exc:
                if not _is_duplicate(exc):
                    raise
                log.warning("exchange rejected client id %s as a duplicate; fetching the existing order", ecid)
                existing = order_fetch_by_client_id(ex, symbol, ecid)
                if existing is None:
                    raise
                return existing, "duplicate"
        except ccxt.NetworkError as exc:  # includes RequestTimeout: the order may or may not exist
            last_error = exc
            log.warning("network error placing %s (attempt %d/%d): %s", ecid, attempt + 1, PLACE_ATTEMPTS,
                        type(exc).__name__)
    raise LiveOrderUncertain(f"could not place or find order {ecid}: {last_error!r}")


def _order_settled(ex, symbol: str, order: dict, ecid: str) -> dict:
    """A market order with its fill: futures answer NEW with nothing filled yet, so re-read it briefly."""
    for pause in FILL_POLLS:
        if (order.get("filled") or 0) > 0 and order.get("status") != "open":
            return order
        time.sleep(pause)
        order = order_fetch_by_client_id(ex, symbol, ecid) or order
    return order


def _dec(x: Any) -> Decimal:
    return Decimal(repr(float(x))).quantize(STEP)


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
    return _dec(avg), _dec(filled), fee, source, at


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
    amount = float(ex.amount_to_precision(market["symbol"], quantity))
    min_amount = (market.get("limits", {}).get("amount") or {}).get("min") or 0
    min_cost = (market.get("limits", {}).get("cost") or {}).get("min") or 0
    if amount <= 0 or amount < min_amount or amount * expected < min_cost:
        return 0.0, f"size {quantity:.8f} is below {ex.id}'s minimum (amount {min_amount}, notional {min_cost})"
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
    order = _order_settled(ex, market["symbol"], order, ecid)
    position = entry_record(signal_id=signal_id, order=order, how=how, ex=ex, market=market)
    _protect_after_entry(position, ex, market)
    return Position.objects.get(pk=position.pk)


def _protect_after_entry(position: Position, ex, market: dict) -> None:
    """The protective stop on the exchange (apps.trading.live_protect). The entry stands whatever happens
    here: a failure is logged and reconciliation places the stop."""
    from apps.trading.live_protect import protect_sync

    try:
        outcome, detail = protect_sync(position.pk, ex=ex, market=market)
    except Exception:
        log.exception("protective stop of live position %s not placed; reconcile places it", position.pk)
        return
    (log.info if outcome in ("placed", "kept") else log.error)("entry %s: %s", outcome, detail)


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
        audit_record(actor=None, action="position.opened", obj=position, after={
            "mode": "live", "side": position.side, "qty": str(filled), "price": str(avg), "fee": str(fee),
            "fee_source": fee_source, "exchange_order_id": str(order["id"]),
            "client_order_id": order.get("clientOrderId"), "obtained": how,
        })
        fill_push(position, fill, "entry")
    log.info("live entry recorded: signal %s, %s %s @ %s, fee %s (%s, %s)", signal_id, order["side"], filled, avg,
             fee, fee_source, how)
    return position


# ---------------------------------------------------------------- exits


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
    left alone, so a repeat is a no-op."""
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
        from apps.trading.live_protect import protect_cancel

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
    order = _order_settled(ex, market["symbol"], order, ecid)
    return exit_record(position_id=position_id, order=order, how=how, ex=ex, market=market, reason=reason,
                       trigger_price=price, stop_part=stop_part)


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
        audit_record(actor=None, action="position.closed", obj=position, after={
            "mode": "live", "reason": reason, "trigger_price": None if trigger_price is None else str(trigger_price),
            "price": str(avg), "qty": str(filled), "fee": str(fee), "fee_source": fee_source,
            "exchange_order_id": str(order["id"]), "obtained": how, "net_pnl": str(position.net_pnl),
            **({"stop_order_id": str(stop_part[1]["id"]), "stop_qty": str(parts[1][3])} if stop_part else {}),
        })
        fill_push(position, fill, "exit")
        ghost_id = position.ghost_id
        transaction.on_commit(lambda: _review_after_close(ghost_id))
    return position


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

    # 1. open on the exchange
    open_orders = ex.fetch_open_orders()
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
            _ledger_entry_filled(ex, db_order, found, market)
        else:
            exit_record(position_id=db_order.position_id, order=found, how="reconcile", ex=ex, market=market,
                        reason="manual", db_order=db_order)
        report.add("ledger_open_filled", f"{what} filled on the exchange: fill recorded", fixed=True)
        return
    state = "is not on the exchange" if found is None else f"is {found.get('status')} with nothing filled"
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=db_order.pk)
        locked.status = Order.Status.REJECTED
        locked.save(update_fields=["status"])
        position = Position.objects.select_for_update().get(pk=locked.position_id)
        voided = ""
        if (locked.purpose == Order.Purpose.ENTRY and position.status == Position.Status.OPEN
                and not Fill.objects.filter(order__position=position).exists()):
            position.status, position.closed_at = Position.Status.CLOSED, datetime.now(tz=UTC)
            position.exit_price, position.exit_reason, position.gross_pnl = position.entry_price, "manual", 0
            position.save(update_fields=["status", "closed_at", "exit_price", "exit_reason", "gross_pnl",
                                         "updated_at"])
            voided = f"; position #{position.pk} had no fill and is voided at zero P&L"
    report.add("ledger_open_missing", f"{what} {state}: marked rejected{voided}", fixed=True)


def _ledger_entry_filled(ex, db_order: Order, found: dict, market: dict) -> None:
    """A ledger entry order still `new` that the exchange filled: fill it in and re-anchor the position."""
    avg, filled, fee, fee_source, at = _fill_figures(ex, found, market)
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=db_order.pk)
        position = Position.objects.select_for_update().get(pk=order.position_id)
        order.status, order.quantity = Order.Status.FILLED, filled
        order.save(update_fields=["status", "quantity"])
        Fill.objects.create(order=order, price=avg, quantity=filled, fee=fee, filled_at=at)
        ratio = avg / position.entry_price
        position.stop = (position.stop * ratio).quantize(STEP)
        position.target = (position.target * ratio).quantize(STEP)
        position.entry_price, position.quantity, position.fees = avg, filled, position.fees + fee
        position.save(update_fields=["stop", "target", "entry_price", "quantity", "fees", "updated_at"])
        audit_record(actor=None, action="position.entry_reconciled", obj=position, after={
            "price": str(avg), "qty": str(filled), "fee": str(fee), "fee_source": fee_source,
            "exchange_order_id": str(found["id"]),
        })


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
        with transaction.atomic():
            row, _ = Order.objects.select_for_update().update_or_create(
                position=position, purpose=Order.Purpose.PROTECT,
                defaults={"client_order_id": ledger_client_id(order["clientOrderId"]),
                          "instrument_id": position.instrument_id, "side": order["side"], "mode": Mode.LIVE,
                          "quantity": _dec(order["filled"]), "status": Order.Status.NEW})
        exit_record(position_id=position.pk, order=order, how="reconcile", ex=ex, market=market,
                    reason=ExitReason.STOP, db_order=row)
        report.add("exchange_fill_missing", f"{what}: protective stop fill recorded as the exit", fixed=True)
        return
    exit_record(position_id=position.pk, order=order, how="reconcile", ex=ex, market=market, reason="manual")
    report.add("exchange_fill_missing", f"{what}: exit recorded from the exchange", fixed=True)


# outcome of apps.trading.live_protect.protect_sync -> fixed by reconcile (True) or for a person (False)
_STOP_OUTCOMES = {"placed": True, "moved": True, "filled": True, "crossed": True, "cancelled": True,
                  "unprotected": False, "uncertain": False, "partial": False, "double": False}


def _reconcile_stops(ex, report: ReconcileReport, exchange_code: str) -> None:
    from apps.trading.live_protect import protect_sync

    positions = (Position.objects.filter(mode=Mode.LIVE, instrument__exchange__code=exchange_code)
                 .filter(Q(status=Position.Status.OPEN)
                         | Q(orders__purpose=Order.Purpose.PROTECT, orders__status=Order.Status.NEW))
                 .distinct().order_by("pk"))
    for position in positions:
        try:
            outcome, detail = protect_sync(position.pk, ex=ex, how="reconcile: stop filled on the exchange")
        except Exception as exc:
            log.exception("protective stop of position %s", position.pk)
            outcome, detail = "error", f"position #{position.pk}: checking its protective stop failed ({exc!r})"
        if outcome in _STOP_OUTCOMES or outcome == "error":
            report.add(f"protect_{outcome}", detail, fixed=_STOP_OUTCOMES.get(outcome, False))


def _reconcile_stale_stop(ex, report: ReconcileReport, order: dict, what: str) -> None:
    """A protective stop of ours open on the exchange that the ledger does not name as current (replaced, or
    its position closed): it would sell coins a second time, so it is cancelled."""
    from apps.trading.live_protect import protect_cancel

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


def _on_worker_ready(**kwargs) -> None:
    live_startup()


try:  # Celery is there in every process that runs tasks; the hook is harmless elsewhere
    from celery.signals import worker_ready

    worker_ready.connect(_on_worker_ready, weak=False, dispatch_uid="hftweb-live-reconcile")
except ImportError:  # pragma: no cover
    pass
