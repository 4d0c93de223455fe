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
from apps.trading import live_executor, live_protect
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
    from apps.trading.live_client import live_clients_clear

    types = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
    with FakeBinanceSpot(price=PRICE, order_types=types) as fake:  # as recent Binance exchangeInfo lists them
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
    moved = live_executor.position_stop_move(position_id=position.pk, stop=breakeven)
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
    closed = live_executor.position_stop_move(position_id=position.pk, stop=Decimal("95200"))
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    types = [(p["type"], p["newClientOrderId"].rsplit("-", 1)[1]) for p in fake.posted_orders()]
    # stop2 was refused ("Stop price would trigger immediately."): the desk's rule says out, at market.
    assert types == [("MARKET", "entry"), ("STOP_LOSS_LIMIT", "stop1"), ("STOP_LOSS_LIMIT", "stop2"),
                     ("MARKET", "exit")]
    _, avg, _, _ = exchange_figures(fake, fake.orders[-1]["orderId"])  # a market sell at the fake's price
    assert abs(closed.exit_price - avg) <= D8 and Decimal("95100") <= avg <= Decimal("95100.01")
    assert Order.objects.get(position=position, purpose=Order.Purpose.PROTECT).status == Order.Status.REJECTED
    assert not [o for o in fake.orders if o["status"] == "NEW"]


# ---------------------------------------------------------------- start-up reconciliation


def _kinds(report) -> list[tuple[str, bool]]:
    return [(f.kind, f.fixed) for f in report.findings]


def test_reconcile_places_a_stop_that_is_missing_again(desk, live_settings):
    """Three ways a live position can lack its stop: cancelled by hand on the exchange, opened by a task that
    died after recording the entry (no row), and a row written by a task that died before placing."""
    from apps.trading.live_client import live_exchange, order_place_market
    from apps.trading.live_records import entry_record

    fake = live_settings
    a = _open(desk)
    fake._cancel_order({"symbol": "BTCUSDT", "origClientOrderId": f"hft-{a.signal_id}-stop1"})  # by hand

    report = live_reconcile_binance()
    assert _kinds(report) == [("protect_placed", True)]
    assert "was canceled" in report.findings[0].detail
    row = Order.objects.get(position=a, purpose=Order.Purpose.PROTECT)
    assert (row.client_order_id, row.status) == (f"hft-{a.signal_id}-stop2", "new")
    assert fake.order_by_client_id(row.client_order_id)["status"] == "NEW" and fake.locked["BTC"] == HELD
    assert live_reconcile_binance().findings == []  # in step now: nothing to do, nothing sent
    assert len(fake.posted_orders()) == 3

    # A second ghost's position whose task died after recording the entry, before the stop.
    from apps.ghosts.services import ghost_create

    other = ghost_create(name="fader-2", kind="spike_fader", instrument=desk["instrument"], enabled=True)
    signal = new_signal(other, 5)
    ex = live_exchange("binance", symbol="BTC/USDT")
    order, how = order_place_market(ex, symbol="BTC/USDT", side="buy", amount=0.01, ecid=f"hft-{signal.pk}-entry")
    b = entry_record(signal_id=signal.pk, order=order, how=how, ex=ex, market=ex.market("BTC/USDT"))
    assert not Order.objects.filter(position=b, purpose=Order.Purpose.PROTECT).exists()
    report = live_reconcile_binance()
    assert _kinds(report) == [("protect_placed", True)] and f"hft-{signal.pk}-stop1" in report.findings[0].detail
    held_b = (Decimal("0.01") * Decimal("0.999")).quantize(LOT, rounding=ROUND_DOWN)
    assert Decimal(fake.order_by_client_id(f"hft-{signal.pk}-stop1")["origQty"]) == held_b

    # The row written, the order never sent (the task died in between): placed under the next id.
    Order.objects.filter(position=b, purpose=Order.Purpose.PROTECT).update(client_order_id=f"hft-{signal.pk}-stop2")
    report = live_reconcile_binance()
    kinds = _kinds(report)
    # stop1 is ours, open, and no longer the ledger's: cancelled; stop2 is not on the exchange: stop3 placed.
    assert kinds == [("protect_stale", True), ("protect_placed", True)], report.lines()
    assert fake.order_by_client_id(f"hft-{signal.pk}-stop1")["status"] == "CANCELED"
    assert fake.order_by_client_id(f"hft-{signal.pk}-stop3")["status"] == "NEW"
    assert fake.locked["BTC"] == HELD + held_b
    # The first position's exit sells what its stop held, not the second position's coins.
    position_exit(position_id=a.pk, price=95760.0, at=AT + timedelta(minutes=9), reason=ExitReason.TARGET)
    assert Decimal(fake.posted_orders()[-1]["quantity"]) == HELD
    assert fake.balances["BTC"] - fake.locked["BTC"] < LOT and fake.locked["BTC"] == held_b


def live_reconcile_binance():
    from apps.trading.live_reconcile import live_reconcile

    return live_reconcile(exchange_code="binance")


def test_reconcile_moves_a_stop_out_of_step_with_the_ledger(desk, live_settings):
    fake = live_settings
    position = _open(desk)
    Position.objects.filter(pk=position.pk).update(stop=Decimal("94500"))  # moved while the desk was down
    report = live_reconcile_binance()
    assert _kinds(report) == [("protect_moved", True)]
    assert fake.order_by_client_id(f"hft-{position.signal_id}-stop1")["status"] == "CANCELED"
    new = fake.order_by_client_id(f"hft-{position.signal_id}-stop2")
    assert (new["status"], Decimal(new["stopPrice"]), Decimal(new["origQty"])) == ("NEW", Decimal("94500"), HELD)


def test_reconcile_closes_a_position_whose_stop_filled_while_the_desk_was_down(desk, live_settings):
    from apps.trading.execution import positions_check_price

    fake = live_settings
    usdt_before = fake.balances["USDT"]
    position = _open(desk)
    filled = fake.set_price(Decimal("93900.00"))  # nobody of the desk is watching
    assert len(filled) == 1
    report = live_reconcile_binance()
    assert _kinds(report) == [("protect_filled", True)]
    closed = Position.objects.get(pk=position.pk)
    qty, avg, _, _ = exchange_figures(fake, filled[0]["orderId"])
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    assert (closed.exit_price, Fill.objects.get(order__purpose="protect").quantity) == (avg, qty)
    _assert_ledger_is_the_cash(fake, closed, usdt_before)
    # No double exit: the restarted feed sees the price through the stop, reconcile runs again.
    assert positions_check_price(instrument_id=desk["instrument"].pk, price=93800.0, at=AT + timedelta(hours=1)) == []
    assert live_reconcile_binance().findings == []
    assert [p["type"] for p in fake.posted_orders()] == ["MARKET", "STOP_LOSS_LIMIT"]
    assert Fill.objects.filter(order__position=position).count() == 2  # the entry and the stop


def test_a_stop_partly_filled_and_the_desk_exit_sell_the_position_together(desk, live_settings):
    """A stop-limit triggered into a thin book: part of it filled on the exchange when the desk's own stop exit
    fires. The cancel returns what filled; the desk sells the rest; both fills are the exit."""
    fake = live_settings
    usdt_before = fake.balances["USDT"]
    position = _open(desk)
    stop_cid = f"hft-{position.signal_id}-stop1"
    fake.set_price(Decimal("94000.00"), at_most=Decimal("0.00400"))
    assert fake.order_by_client_id(stop_cid)["status"] == "PARTIALLY_FILLED"
    closed = position_exit(position_id=position.pk, price=94000.0, at=AT + timedelta(minutes=4),
                           reason=ExitReason.STOP)
    stop = fake.order_by_client_id(stop_cid)
    assert (stop["status"], Decimal(stop["executedQty"])) == ("CANCELED", Decimal("0.004"))
    sold = fake.posted_orders()[-1]
    assert (sold["type"], Decimal(sold["quantity"])) == ("MARKET", HELD - Decimal("0.004"))
    rows = {o.purpose: o for o in Order.objects.filter(position=position)}
    assert rows["protect"].status == rows["exit"].status == Order.Status.FILLED
    stop_fill, exit_fill = Fill.objects.get(order=rows["protect"]), Fill.objects.get(order=rows["exit"])
    assert (stop_fill.price, stop_fill.quantity) == (Decimal("94000.00"), Decimal("0.004"))
    _, avg, _, _ = exchange_figures(fake, fake.orders[-1]["orderId"])
    assert abs(exit_fill.price - avg) <= D8 and exit_fill.quantity == HELD - Decimal("0.004")
    vwap = (stop_fill.price * stop_fill.quantity + exit_fill.price * exit_fill.quantity) / HELD
    assert abs(closed.exit_price - vwap) <= D8 and closed.exit_reason == ExitReason.STOP
    _assert_ledger_is_the_cash(fake, closed, usdt_before)
    assert fake.locked["BTC"] == 0 and not [o for o in fake.orders if o["status"] in ("NEW", "PARTIALLY_FILLED")]


def test_reconcile_records_a_stop_fill_the_ledger_does_not_name(desk, live_settings):
    """The ledger lost track of which stop rests (it names stop2; stop1 is what the exchange holds), and
    stop1 filled: found among our recent orders, it is recorded as the exit, with no stop placed again."""
    fake = live_settings
    position = _open(desk)
    Order.objects.filter(position=position, purpose="protect").update(client_order_id=f"hft-{position.signal_id}-stop2")
    fake.set_price(Decimal("94000.00"))
    report = live_reconcile_binance()
    assert _kinds(report) == [("exchange_fill_missing", True)], report.lines()
    closed = Position.objects.get(pk=position.pk)
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    row = Order.objects.get(position=position, purpose="protect")
    assert (row.client_order_id, row.status) == (f"hft-{position.signal_id}-stop1", Order.Status.FILLED)
    assert [p["type"] for p in fake.posted_orders()] == ["MARKET", "STOP_LOSS_LIMIT"]
    assert live_reconcile_binance().findings == []
