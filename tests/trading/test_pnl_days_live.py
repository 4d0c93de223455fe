"""Live closes count into the P&L day rows (apps.revenue.pnl_days) like paper ones: an exit on the exchange, an
entry the reconciliation voids, and a kill-switch flatten of a live position, against the local fake Binance.
After each, every day row equals the sums over the closed positions to the cent, and equity from the rows
equals equity from the ledger (start + realised gross - every fill's fee + open marks)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.market.models import FeedStatus
from apps.revenue.models import PnlDay
from apps.signals.models import Fate, Signal
from apps.trading import selectors
from apps.trading.execution import position_exit, signal_execute
from apps.trading.models import ExitReason, Mode, Order, Position
from apps.trading.risk_services import positions_flatten
from tests.revenue.test_pnl_days import CENT, assert_rows_equal_ledger, ledger_equity
from tests.trading.conftest import PRICE, T0, new_signal

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
AT = T0 + timedelta(minutes=1, seconds=1)


def test_live_exit_void_and_flatten_fill_the_day_rows(desk, live_settings):
    fake = live_settings
    ghost = desk["ghost"]
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(last_price=PRICE)

    # A live round trip: entry and exit on the exchange (the exit on the next UTC day).
    opened = signal_execute(signal_id=new_signal(ghost).pk, price=PRICE, at=AT, quantity=0.01)
    assert opened is not None and opened.mode == Mode.LIVE
    fake.price = Decimal("95760.00")
    closed = position_exit(position_id=opened.pk, price=float(opened.target), at=AT + timedelta(hours=13),
                           reason=ExitReason.TARGET)
    assert closed is not None and closed.status == Position.Status.CLOSED
    assert_rows_equal_ledger()
    assert PnlDay.objects.get().trades == 1

    # An entry the ledger holds but the exchange never got: reconciliation voids it (a zero trade).
    signal = new_signal(ghost, minute=30)
    Signal.objects.filter(pk=signal.pk).update(fate=Fate.TAKEN)
    position = Position.objects.create(
        ghost=ghost, instrument=desk["instrument"], signal=signal, mode=Mode.LIVE, side="long",
        quantity=Decimal("0.01"), entry_price=PRICE, stop=PRICE * Decimal("0.99"), target=PRICE * Decimal("1.008"),
        opened_at=AT)
    Order.objects.create(position=position, instrument=desk["instrument"], client_order_id=f"hft-{signal.pk}-entry",
                         purpose="entry", side="buy", quantity=Decimal("0.01"), mode=Mode.LIVE,
                         status=Order.Status.NEW)
    call_command("reconcile", stdout=open("/dev/null", "w"))  # noqa: SIM115 - the report is not read here
    position.refresh_from_db()
    assert position.status == Position.Status.CLOSED
    assert_rows_equal_ledger()

    # The kill switch flattens a live position: a market exit on the exchange, counted too.
    fake.price = PRICE
    held = signal_execute(signal_id=new_signal(ghost, minute=60).pk, price=PRICE, at=AT + timedelta(hours=20),
                          quantity=0.01)
    assert held is not None
    assert selectors.equity().quantize(CENT) == ledger_equity().quantize(CENT)
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(last_price=Decimal("94500.00"))
    fake.price = Decimal("94500.00")
    assert [p.pk for p in positions_flatten(reason="kill switch: test")] == [held.pk]
    assert_rows_equal_ledger()
    assert selectors.equity().quantize(CENT) == ledger_equity().quantize(CENT)
    assert sum(PnlDay.objects.values_list("trades", flat=True)) == 3
