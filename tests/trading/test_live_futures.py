"""Protective stops for futures/perpetual positions (issue 13, live trading safety): a reduce-only STOP_MARKET on
Binance USDⓈ-M, which ccxt 4.5.90 sends to Binance's Algo Service (POST /fapi/v1/algoOrder), with ccxt's real
binanceusdm class against the local fake USDⓈ-M server (tests/fakes/binance_usdm.py).

Expected figures come from what the fake recorded (its orders, trades, wallet and position), not from the code
under test.
"""

from datetime import timedelta
from decimal import Decimal

import pytest

from apps.audit.models import AuditEvent
from apps.trading.execution import position_exit, signal_execute
from apps.trading.live_executor import position_stop_move
from apps.trading.live_reconcile import live_reconcile
from apps.trading.live_watch import protect_watch
from apps.trading.models import ExitReason, Fill, Mode, Order, Position
from tests.trading.conftest import PRICE, new_signal
from tests.trading.test_live import AT

pytestmark = pytest.mark.django_db
TICK = Decimal("0.1")  # the fake's BTCUSDT price filter


def _open(ghost, *, side: int = 1, minute: int = 0) -> Position:
    signal = new_signal(ghost, minute, side=side)
    position = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    assert position is not None and position.mode == Mode.LIVE
    return position


def _trade(fake, order_id) -> dict:
    [trade] = [t for t in fake.trades if str(t["orderId"]) == str(order_id)]
    return trade


@pytest.mark.parametrize("side, stop_side, trigger_side", [(1, "SELL", "below"), (-1, "BUY", "above")])
def test_an_entry_places_a_reduce_only_stop_market_in_the_algo_service(usdm, side, stop_side, trigger_side):
    fake, ghost = usdm
    position = _open(ghost, side=side)
    assert fake.position == side * position.quantity  # the ledger holds what the exchange holds
    [algo] = fake.posted("/fapi/v1/algoOrder")
    assert (algo["algoType"], algo["type"], algo["side"], algo["reduceOnly"]) == (
        "CONDITIONAL", "STOP_MARKET", stop_side, "true")
    assert algo["clientAlgoId"] == f"hft-{position.signal_id}-stop1"
    trigger = Decimal(algo["triggerPrice"])
    assert trigger == position.stop.quantize(TICK) and (trigger < PRICE if trigger_side == "below" else trigger > PRICE)
    assert Decimal(algo["quantity"]) == position.quantity  # all of it, no commission taken from a contract position
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    assert (row.client_order_id, row.status, row.trigger_price) == (algo["clientAlgoId"], "new", trigger)
    assert [a["algoStatus"] for a in fake.algo_orders] == ["NEW"]
    assert protect_watch() == {"kept": 1}  # found again by its client id in the Algo Service


def test_the_desks_exit_cancels_the_stop_then_closes_reduce_only(usdm):
    fake, ghost = usdm
    wallet = fake.wallet
    position = _open(ghost)
    fake.set_price(Decimal("95760.0"))
    closed = position_exit(position_id=position.pk, price=95760.0, at=AT + timedelta(minutes=5),
                           reason=ExitReason.TARGET)
    assert fake.algo_orders[0]["algoStatus"] == "CANCELED" and fake.working_stops() == []
    deletes = [p for m, path, p in fake.requests if m == "DELETE" and path == "/fapi/v1/algoOrder"]
    assert [d["clientAlgoId"] for d in deletes] == [f"hft-{position.signal_id}-stop1"]
    exit_order = fake.orders[-1]
    assert (exit_order["side"], exit_order["reduceOnly"], exit_order["clientOrderId"]) == (
        "SELL", True, f"hft-{position.signal_id}-exit")
    assert fake.position == 0
    assert closed.exit_reason == ExitReason.TARGET and closed.exit_price == Decimal(exit_order["avgPrice"])
    # the ledger's net P&L is the account's: realised P&L less both commissions
    assert abs(closed.net_pnl - (fake.wallet - wallet)) < Decimal("0.0001")
    assert Order.objects.get(position=position, purpose=Order.Purpose.PROTECT).status == Order.Status.CANCELLED


def test_a_stop_that_fired_while_the_desk_was_away_closes_the_position_from_its_fill(usdm):
    fake, ghost = usdm
    wallet = fake.wallet
    position = _open(ghost)
    [fired] = fake.set_price(Decimal("93900.0"))  # through the stop: the Algo Service sells at market
    assert fake.position == 0 and fired["actualOrderId"]
    assert protect_watch() == {"filled": 1}  # the watch finds it (as start-up reconciliation would)
    closed = Position.objects.get(pk=position.pk)
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    trade = _trade(fake, fired["actualOrderId"])
    assert closed.exit_price == Decimal(trade["price"])
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    fill = Fill.objects.get(order=row)
    assert row.status == Order.Status.FILLED and fill.quantity == Decimal(trade["qty"])
    assert fill.fee == Decimal(trade["commission"])  # from the actual order's trades, in USDT
    assert not Order.objects.filter(position=position, purpose=Order.Purpose.EXIT).exists()
    assert [o["clientOrderId"] for o in fake.orders].count(f"hft-{position.signal_id}-exit") == 0  # no second sell
    assert abs(closed.net_pnl - (fake.wallet - wallet)) < Decimal("0.0001")
    audit = AuditEvent.objects.get(action="position.closed", object_id=str(position.pk))
    assert audit.after["obtained"] == "protect watch: stop filled on the exchange"


def test_a_moved_stop_replaces_the_algo_order_and_reconcile_finds_all_in_step(usdm):
    fake, ghost = usdm
    position = _open(ghost)
    breakeven = position.entry_price.quantize(TICK)
    fake.set_price(Decimal("95500.0"))
    moved = position_stop_move(position_id=position.pk, stop=breakeven)
    assert moved.stop == breakeven and moved.status == Position.Status.OPEN
    assert [(a["clientAlgoId"][-5:], a["algoStatus"]) for a in fake.algo_orders] == [("stop1", "CANCELED"),
                                                                                      ("stop2", "NEW")]
    assert Decimal(fake.algo_orders[1]["triggerPrice"]) == breakeven
    report = live_reconcile(exchange_code="binanceusdm")
    assert report.unresolved == [] and report.checked_positions == 1  # holdings match the exchange's position
    assert not [f for f in report.findings if f.kind.startswith("protect_") and f.kind != "protect_kept"]


def test_a_stop_the_price_is_already_through_closes_at_market(usdm):
    fake, ghost = usdm
    position = _open(ghost)
    fake.set_price(Decimal("94000.0"))  # below the new stop: the Algo Service refuses it (-2021)
    closed = position_stop_move(position_id=position.pk, stop=Decimal("94500"))
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    assert fake.position == 0 and fake.working_stops() == []
    assert [a["clientAlgoId"][-5:] for a in fake.algo_orders] == ["stop1"]  # stop2 refused, nothing rests


def test_reconcile_cancels_a_stale_stop_of_ours_in_the_algo_service(usdm):
    """A stop of ours resting in the Algo Service that the ledger does not name (a crash between placing a new
    stop and recording it, say) would close the position a second time: reconcile lists the conditional orders
    too and cancels it."""
    fake, ghost = usdm
    position = _open(ghost)
    with fake._lock:
        status, _ = fake._new_algo({"algoType": "CONDITIONAL", "type": "STOP_MARKET", "side": "SELL",
                                    "quantity": str(position.quantity), "triggerPrice": "90000.0",
                                    "reduceOnly": "true", "clientAlgoId": f"hft-{position.signal_id}-stop7"})
    assert status == 200
    report = live_reconcile(exchange_code="binanceusdm")
    stale = [f for f in report.findings if f.kind == "protect_stale"]
    assert [f.fixed for f in stale] == [True] and "stop7" in stale[0].detail
    assert [(a["clientAlgoId"][-5:], a["algoStatus"]) for a in fake.algo_orders] == [("stop1", "NEW"),
                                                                                      ("stop7", "CANCELED")]


def test_a_stop_stuck_in_triggering_is_reported_not_placed_again_and_the_exit_still_works(usdm):
    """A stop that fired but never reached the matching engine protects nothing, and placing a second one beside
    it could close twice if the first one wakes up: the watch tells a person (once), and the desk's own exit
    still closes the position reduce-only."""
    fake, ghost = usdm
    position = _open(ghost)
    [stuck] = fake.set_price(Decimal("93900.0"), stall=True)
    assert stuck["algoStatus"] == "TRIGGERING" and fake.position == position.quantity
    for _ in range(2):
        assert protect_watch() == {"uncertain": 1}
    assert len(fake.algo_orders) == 1  # nothing placed beside it
    audit = AuditEvent.objects.get(action="protect_watch.uncertain", object_id=str(position.pk))
    assert "TRIGGERING" in audit.reason
    closed = position_exit(position_id=position.pk, price=93900.0, at=AT + timedelta(minutes=2),
                           reason=ExitReason.STOP)
    assert closed.status == Position.Status.CLOSED and fake.position == 0
    assert fake.orders[-1]["clientOrderId"] == f"hft-{position.signal_id}-exit" and fake.orders[-1]["reduceOnly"]
