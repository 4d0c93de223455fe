"""Issue 14: an operator's close of ONE live position goes to the exchange (the local fake Binance spot) through
the same execution door as every exit: a market sell with the exit client order id, exit reason "manual", the
audit row with the user and the reason; with live trading switched off it is refused, the position stays open."""

from datetime import timedelta
from decimal import Decimal

import pytest

from apps.audit.models import AuditEvent
from apps.market.models import FeedStatus
from apps.market.prices import price_set
from apps.trading.execution import ManualCloseRefused, position_close_manual, signal_execute
from apps.trading.models import Mode, Order, Position
from tests.trading.conftest import PRICE, T0, new_signal

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
AT = T0 + timedelta(minutes=1, seconds=1)


def _feed_at(desk, price: Decimal, opened: Position) -> None:
    """The feed up, its last trade after the position's own (exchange) fill time."""
    at = opened.opened_at + timedelta(minutes=3)
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(state="connected", last_price=price,
                                                                    last_trade_at=at)
    price_set(desk["instrument"].pk, float(price), int(at.timestamp() * 1000))


def test_operator_closes_a_live_position_on_the_exchange(desk, live_settings, operator):
    fake = live_settings
    signal = new_signal(desk["ghost"])
    opened = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    assert opened.mode == Mode.LIVE
    fake.price = Decimal("95100.00")
    _feed_at(desk, fake.price, opened)
    closed = position_close_manual(position_id=opened.pk, reason="exchange maintenance soon", user=operator)
    posted = fake.posted_orders()
    assert posted[-1]["newClientOrderId"] == f"hft-{signal.pk}-exit" and posted[-1]["side"] == "SELL"
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == "manual"
    assert Order.objects.filter(position=closed, purpose="exit", mode=Mode.LIVE).count() == 1
    ev = AuditEvent.objects.get(action="position.closed_manually")
    assert ev.actor_id == operator.pk and ev.reason == "exchange maintenance soon"
    with pytest.raises(ManualCloseRefused, match="already closed"):
        position_close_manual(position_id=opened.pk, reason="again", user=operator)
    assert len(fake.posted_orders()) == len(posted)


def test_live_close_refused_when_live_trading_is_off(desk, live_settings, operator, settings):
    signal = new_signal(desk["ghost"])
    opened = signal_execute(signal_id=signal.pk, price=PRICE, at=AT, quantity=0.01)
    _feed_at(desk, PRICE, opened)
    settings.HFT_LIVE_TRADING = False
    with pytest.raises(ManualCloseRefused, match="refused"):
        position_close_manual(position_id=opened.pk, reason="flat", user=operator)
    assert Position.objects.get(pk=opened.pk).status == Position.Status.OPEN
    assert not AuditEvent.objects.filter(action="position.closed_manually").exists()
