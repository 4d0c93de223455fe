"""Database constraints: each is exercised with a real write that the database must refuse."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from apps.market.models import Candle
from apps.revenue.models import RevenueTarget
from apps.signals.models import Signal
from apps.trading.models import Order, Position
from tests.factories import make_ghost, make_instrument, make_position, make_signal

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def candle(inst, **kw) -> Candle:
    row = dict(
        instrument=inst, open_time=T0, open=Decimal("100"), high=Decimal("101"), low=Decimal("99"),
        close=Decimal("100.5"), volume=Decimal("10"), taker_buy_volume=Decimal("6"), taker_sell_volume=Decimal("4"),
    )
    row.update(kw)
    return Candle(**row)


def refused(obj) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        obj.save()


def test_candle_unique_per_instrument_timeframe_open_time():
    inst = make_instrument()
    candle(inst).save()
    refused(candle(inst))
    candle(inst, timeframe="5m").save()  # another timeframe is another bar
    candle(make_instrument(symbol="ETH/USDT")).save()
    assert Candle.objects.count() == 3


@pytest.mark.parametrize(
    "bad",
    [
        {"high": Decimal("98")},  # high below low
        {"open": Decimal("102")},  # open above high
        {"open": Decimal("98")},  # open below low
        {"close": Decimal("101.5")},  # close above high
        {"close": Decimal("98.9")},  # close below low
        {"low": Decimal("0"), "open": Decimal("1"), "close": Decimal("1")},  # non-positive low
        {"volume": Decimal("-1")},
        {"taker_buy_volume": Decimal("-0.1")},
    ],
)
def test_candle_ohlc_and_volume_checks(bad):
    inst = make_instrument()
    refused(candle(inst, **bad))
    assert not Candle.objects.exists()


@pytest.mark.parametrize(
    "enabled,status,ok",
    [
        (True, "active", True),
        (True, "degraded", True),
        (False, "disabled", True),
        (True, "disabled", False),
        (False, "active", False),
        (False, "degraded", False),
    ],
)
def test_ghost_enabled_matches_status(enabled, status, ok):
    inst = make_instrument()
    if ok:
        make_ghost(name="g", instrument=inst, enabled=enabled, status=status)
    else:
        with pytest.raises(IntegrityError), transaction.atomic():
            make_ghost(name="g", instrument=inst, enabled=enabled, status=status)


def test_signal_one_per_ghost_and_bar():
    ghost = make_ghost(name="g", instrument=make_instrument())
    make_signal(ghost=ghost, bar_time=T0)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_signal(ghost=ghost, bar_time=T0)
    make_signal(ghost=ghost, bar_time=T0 + timedelta(minutes=1))
    make_signal(ghost=make_ghost(name="g2", instrument=ghost.instrument), bar_time=T0)
    assert Signal.objects.count() == 3


@pytest.mark.parametrize("confidence,ok", [("0", True), ("1", True), ("0.5", True), ("1.0001", False),
                                           ("-0.0001", False)])
def test_signal_confidence_between_0_and_1(confidence, ok):
    ghost = make_ghost(name="g", instrument=make_instrument())
    if ok:
        make_signal(ghost=ghost, bar_time=T0, confidence=confidence)
    else:
        with pytest.raises(IntegrityError), transaction.atomic():
            make_signal(ghost=ghost, bar_time=T0, confidence=confidence)


def test_one_open_position_per_ghost():
    ghost = make_ghost(name="g", instrument=make_instrument())
    make_position(ghost=ghost, opened_at=T0)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=2))
    # closed ones do not count, and another ghost may hold its own
    make_position(ghost=make_ghost(name="g2", instrument=ghost.instrument), opened_at=T0)
    Position.objects.filter(ghost=ghost).update(
        status="closed", closed_at=T0 + timedelta(minutes=3), exit_price=Decimal("101")
    )
    make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=5))
    assert Position.objects.filter(ghost=ghost).count() == 2


def test_closed_position_needs_exit_and_open_has_none():
    ghost = make_ghost(name="g", instrument=make_instrument())
    p = make_position(ghost=ghost, opened_at=T0)
    p.status = Position.Status.CLOSED
    refused(p)  # no closed_at, no exit_price
    p.closed_at = T0 + timedelta(minutes=1)
    refused(p)  # still no exit_price
    p.refresh_from_db()
    p.closed_at = T0 + timedelta(minutes=1)
    refused(p)  # open with a closed_at
    p.refresh_from_db()
    p.quantity = Decimal("0")
    refused(p)  # quantity must be positive
    p.refresh_from_db()
    p.status, p.closed_at, p.exit_price = Position.Status.CLOSED, T0 + timedelta(minutes=1), Decimal("101")
    p.save()


def test_order_client_order_id_unique():
    ghost = make_ghost(name="g", instrument=make_instrument())
    p1 = make_position(ghost=ghost, opened_at=T0, exit="101")
    p2 = make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=10))
    taken = p1.orders.get(purpose="entry").client_order_id
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(position=p2, instrument=p2.instrument, client_order_id=taken, purpose="exit",
                             side="sell", quantity=p2.quantity)
    # one order per position and purpose, too
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(position=p2, instrument=p2.instrument, client_order_id="hft-other", purpose="entry",
                             side="buy", quantity=p2.quantity)


@pytest.mark.parametrize("amount", ["0", "-5", "-0.01"])
def test_revenue_target_amount_positive(amount):
    ghost = make_ghost(name="g", instrument=make_instrument())
    refused(RevenueTarget(ghost=ghost, amount=Decimal(amount)))
    assert not RevenueTarget.objects.exists()


def test_one_target_per_ghost_and_one_for_portfolio():
    inst = make_instrument()
    g1, g2 = make_ghost(name="g1", instrument=inst), make_ghost(name="g2", instrument=inst)
    RevenueTarget.objects.create(ghost=g1, amount=Decimal("10"))
    RevenueTarget.objects.create(ghost=g2, amount=Decimal("10"))
    refused(RevenueTarget(ghost=g1, amount=Decimal("20"), period="week"))
    RevenueTarget.objects.create(ghost=None, amount=Decimal("50"))
    refused(RevenueTarget(ghost=None, amount=Decimal("60")))  # NULL ghost is still one owner
    assert RevenueTarget.objects.count() == 3
