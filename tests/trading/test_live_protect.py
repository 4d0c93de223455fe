"""Protective stops on the exchange for live positions (issue 12, live trading safety), with ccxt's real
binance class against the local fake Binance spot server (tests/trading/fake_binance.py).

The fake checks what ccxt sends for a stop the way Binance does (the order type must be one the symbol lists,
STOP_LOSS_LIMIT needs price + stopPrice + timeInForce, a stop that would trigger at once and a sell of coins a
resting stop holds are refused) and fills a stop when its own price crosses it (`set_price`). Expected figures
come from what the fake recorded, not from the code under test.
"""

from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import pytest

from apps.audit.models import AuditEvent
from apps.trading import live_protect
from apps.trading.execution import position_exit, signal_execute
from apps.trading.models import ExitReason, Fill, Mode, Order, Position
from tests.trading.conftest import PRICE, new_signal
from tests.trading.fake_binance import FakeBinanceSpot
from tests.trading.test_live import AT, D8, LOT, ORDERED, exchange_figures

pytestmark = pytest.mark.django_db
HELD = (ORDERED * Decimal("0.999")).quantize(LOT, rounding=ROUND_DOWN)  # the buy commission was paid in BTC
TICK = Decimal("0.01")


def _open(desk, minute: int = 0) -> Position:
    signal = new_signal(desk["ghost"], minute)
    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    assert position is not None and position.mode == Mode.LIVE
    return position


def _stop_orders(fake) -> list[dict]:
    return [o for o in fake.orders if o["type"] in ("STOP_LOSS", "STOP_LOSS_LIMIT")]


def _assert_ledger_is_the_cash(fake, closed: Position, usdt_before: Decimal) -> None:
    """Net P&L equals the account's quote cash flow plus the BTC left (lot-step dust), valued at the entry."""
    usdt_delta = fake.balances["USDT"] - usdt_before
    assert abs(closed.net_pnl - (usdt_delta + fake.balances["BTC"] * closed.entry_price)) < Decimal("0.0001")


# ---------------------------------------------------------------- placed with the entry


def test_entry_places_a_stop_loss_limit_on_the_exchange_and_records_it(desk, live_settings):
    fake = live_settings
    position = _open(desk)
    posted = fake.posted_orders()
    assert [p["type"] for p in posted] == ["MARKET", "STOP_LOSS_LIMIT"]  # the symbol lists no STOP_LOSS
    stop = posted[1]
    trigger = position.stop.quantize(TICK)  # ccxt's price_to_precision on the 0.01 tick
    assert stop["newClientOrderId"] == f"hft-{position.signal_id}-stop1"
    assert (stop["side"], Decimal(stop["quantity"]), Decimal(stop["stopPrice"])) == ("SELL", HELD, trigger)
    # The limit leaves a 1 % band below the trigger for the sell to fill in a fast market; GTC.
    assert Decimal(stop["price"]) == (trigger * Decimal("0.99")).quantize(TICK)
    assert stop["timeInForce"] == "GTC"
    resting = fake.order_by_client_id(stop["newClientOrderId"])
    assert resting["status"] == "NEW" and resting["isWorking"] is False
    assert fake.locked["BTC"] == HELD  # the stop holds what the exit would sell

    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    assert (row.client_order_id, row.status, row.mode, row.side) == (stop["newClientOrderId"], "new", "live", "sell")
    assert (row.trigger_price, row.quantity) == (trigger, HELD)
    audit = AuditEvent.objects.get(action="position.protected", object_id=str(position.pk))
    assert audit.after["order_type"] == "STOP_LOSS_LIMIT" and audit.after["exchange_order_id"] == str(
        resting["orderId"])


def test_a_stop_market_where_the_symbol_lists_one(desk, live_settings, settings):
    from apps.trading.live import live_clients_clear

    types = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
    with FakeBinanceSpot(price=PRICE, order_types=types) as fake:  # Binance's list for BTCUSDT today
        settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake.urls()}, "enableRateLimit": False}
        live_clients_clear()
        position = _open(desk)
        stop = fake.posted_orders()[1]
        assert stop["type"] == "STOP_LOSS" and "price" not in stop and "timeInForce" not in stop
        assert Decimal(stop["stopPrice"]) == position.stop.quantize(TICK) and Decimal(stop["quantity"]) == HELD
        usdt_before = Decimal("100000")  # the fake account's start
        fake.set_price(Decimal("93000.00"))  # a gap far through the stop: a stop-market still gets out
        closed = position_exit(position_id=position.pk, price=93000.0, at=AT + timedelta(minutes=3),
                               reason=ExitReason.STOP)
        assert closed.exit_price == Decimal("93000.00") and closed.exit_reason == ExitReason.STOP
        assert [p["type"] for p in fake.posted_orders()] == ["MARKET", "STOP_LOSS"]
        _assert_ledger_is_the_cash(fake, closed, usdt_before)


# ---------------------------------------------------------------- exits


def test_exit_cancels_the_stop_before_selling(desk, live_settings):
    fake = live_settings
    usdt_before = fake.balances["USDT"]
    position = _open(desk)
    fake.set_price(Decimal("95760.00"))  # the target: the desk exits, the stop must not stay behind
    closed = position_exit(position_id=position.pk, price=float(position.target), at=AT + timedelta(minutes=5),
                           reason=ExitReason.TARGET)
    cid = f"hft-{position.signal_id}-stop1"
    assert [c.get("origClientOrderId") for c in fake.cancel_requests()] == [cid]
    kinds = [(m, p.get("type")) for m, path, p in fake.requests if path == "/api/v3/order" and m != "GET"]
    assert kinds == [("POST", "MARKET"), ("POST", "STOP_LOSS_LIMIT"), ("DELETE", None), ("POST", "MARKET")]
    assert fake.order_by_client_id(cid)["status"] == "CANCELED" and fake.locked["BTC"] == 0
    assert Decimal(fake.posted_orders()[-1]["quantity"]) == HELD  # the coins the stop held, sold
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    assert row.status == Order.Status.CANCELLED and not row.fills.exists()
    _, avg, _, _ = exchange_figures(fake, fake.orders[-1]["orderId"])
    assert closed.exit_reason == ExitReason.TARGET and abs(closed.exit_price - avg) <= D8
    _assert_ledger_is_the_cash(fake, closed, usdt_before)
    assert position_exit(position_id=closed.pk, price=95760.0, at=AT, reason="target") is None
    assert len(fake.posted_orders()) == 3 and len(fake.cancel_requests()) == 1


def test_the_exchange_stop_filled_first_closes_from_its_fill_without_a_second_sell(desk, live_settings):
    """The race: the exchange's stop fills on the same prices on which the desk fires its own stop exit.
    The desk's cancel finds it filled (-2011): the position closes from the stop's fill, nothing is sold twice."""
    fake = live_settings
    usdt_before = fake.balances["USDT"]
    position = _open(desk)
    filled = fake.set_price(Decimal("94000.00"))  # through the stop (94050), above its limit (93109.50)
    assert [o["clientOrderId"] for o in filled] == [f"hft-{position.signal_id}-stop1"]
    closed = position_exit(position_id=position.pk, price=94000.0, at=AT + timedelta(minutes=2),
                           reason=ExitReason.STOP)
    assert [p["type"] for p in fake.posted_orders()] == ["MARKET", "STOP_LOSS_LIMIT"]  # no market sell
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    qty, avg, _, fee_quote = exchange_figures(fake, filled[0]["orderId"])
    assert (closed.exit_price, qty) == (Decimal("94000.00"), HELD)
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    fill = Fill.objects.get(order=row)
    assert row.status == Order.Status.FILLED and (fill.price, fill.quantity) == (avg, qty)
    assert abs(fill.fee - fee_quote) <= Decimal("0.000001")
    assert not Order.objects.filter(position=position, purpose=Order.Purpose.EXIT).exists()
    audit = AuditEvent.objects.get(action="position.closed", object_id=str(position.pk))
    assert audit.after["obtained"] == "stop filled on the exchange"
    _assert_ledger_is_the_cash(fake, closed, usdt_before)
    assert fake.balances["BTC"] == ORDERED * Decimal("0.999") - HELD  # the dust only


# ---------------------------------------------------------------- the stop moves


def test_moving_the_stop_moves_the_exchange_order(desk, live_settings):
    fake = live_settings
    position = _open(desk)
    fake.set_price(Decimal("95400.00"))
    breakeven = position.entry_price
    moved = live_protect.position_stop_move(position_id=position.pk, stop=breakeven)
    assert moved.stop == breakeven
    old, new = f"hft-{position.signal_id}-stop1", f"hft-{position.signal_id}-stop2"
    assert fake.order_by_client_id(old)["status"] == "CANCELED"  # cancelled first: both would hold the BTC
    placed = fake.posted_orders()[-1]
    assert placed["newClientOrderId"] == new and Decimal(placed["stopPrice"]) == breakeven.quantize(TICK)
    assert Decimal(placed["quantity"]) == HELD and fake.locked["BTC"] == HELD
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    assert (row.client_order_id, row.status, row.trigger_price) == (new, "new", breakeven.quantize(TICK))
    assert AuditEvent.objects.filter(action="position.stop_moved", object_id=str(position.pk)).count() == 1
    # In step: a check changes nothing on the exchange.
    n = len(fake.requests)
    assert live_protect.protect_sync(position.pk)[0] == "kept"
    assert all(m == "GET" for m, _, _ in fake.requests[n:])
    # The new level protects: below the entry (above the old stop) the exchange sells; the next check
    # closes the position from that fill.
    filled = fake.set_price(Decimal("94900.00"))
    assert [o["clientOrderId"] for o in filled] == [new]
    assert live_protect.protect_sync(position.pk)[0] == "filled"
    closed = Position.objects.get(pk=position.pk)
    assert closed.status == Position.Status.CLOSED and closed.exit_price == Decimal("94900.00")
    assert closed.exit_reason == ExitReason.STOP and len(fake.posted_orders()) == 3


def test_moving_the_stop_through_the_price_exits_at_market(desk, live_settings):
    fake = live_settings
    position = _open(desk)
    fake.set_price(Decimal("95100.00"))
    closed = live_protect.position_stop_move(position_id=position.pk, stop=Decimal("95200"))
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    types = [(p["type"], p["newClientOrderId"].rsplit("-", 1)[1]) for p in fake.posted_orders()]
    # stop2 was refused ("Stop price would trigger immediately."): the desk's rule says out, at market.
    assert types == [("MARKET", "entry"), ("STOP_LOSS_LIMIT", "stop1"), ("STOP_LOSS_LIMIT", "stop2"),
                     ("MARKET", "exit")]
    _, avg, _, _ = exchange_figures(fake, fake.orders[-1]["orderId"])  # a market sell at the fake's price
    assert abs(closed.exit_price - avg) <= D8 and Decimal("95100") <= avg <= Decimal("95100.01")
    assert Order.objects.get(position=position, purpose=Order.Purpose.PROTECT).status == Order.Status.REJECTED
    assert not [o for o in fake.orders if o["status"] == "NEW"]
