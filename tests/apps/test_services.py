"""Services against the real database: ghosts, revenue targets, signals, paper execution and the ledger."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from django.conf import settings
from django.db.models import Sum

from apps.audit.models import AuditEvent
from apps.engine.types import Draft
from apps.ghosts.models import Ghost, GhostStatus
from apps.ghosts.services import GhostError, ghost_record_evaluation, ghost_set_enabled
from apps.market.models import FeedStatus
from apps.revenue.models import RevenueTarget
from apps.revenue.services import TargetError, revenue_target_set
from apps.signals.models import Fate, Signal
from apps.signals.services import signal_record
from apps.trading import selectors
from apps.trading.execution import positions_check_price
from apps.trading.models import ExitReason, Fill, Order, Position
from apps.trading.services import position_close, signal_execute_paper

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FEE = Decimal("0.001")  # binance spot taker
SLIP = 0.0005  # 5 bps
STEP = Decimal("0.00000001")


def draft(*, side: int = 1, entry: float = 100.0, stop_pct: float = 1.0, target_pct: float = 0.8,
          max_hold_s: float = 3600.0) -> Draft:
    return Draft(
        side=side,
        confidence=0.7,
        priority=2,
        entry=entry,
        stop=entry * (1 - side * stop_pct / 100),
        target=entry * (1 + side * target_pct / 100),
        size_mult=1.0,
        max_hold_s=max_hold_s,
        reason="test spike",
        bar_time=pd.Timestamp(T0),
    )


def new_signal(ghost: Ghost, minute: int = 0, **kw) -> Signal:
    signal, created = signal_record(ghost=ghost, bar_time=T0 + timedelta(minutes=minute), draft=draft(**kw))
    assert created
    return signal


def open_position(ghost: Ghost, minute: int = 0, price: str = "100", **kw) -> Position:
    signal = new_signal(ghost, minute, **kw)
    at = T0 + timedelta(minutes=minute + 1, seconds=1)
    position = signal_execute_paper(signal_id=signal.pk, price=Decimal(price), at=at)
    assert position is not None
    return position


def set_last_price(instrument, price: str | None) -> None:
    FeedStatus.objects.filter(instrument=instrument).update(last_price=price)


# --- ghosts -------------------------------------------------------------------------------------


def test_ghost_set_enabled_audits_and_is_idempotent(desk, make_user):
    op = make_user("olga", "operator")
    ghost = desk["ghost"]
    out = ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=op, reason="  too many losses  ")
    assert (out.enabled, out.status, out.status_reason) == (False, GhostStatus.DISABLED, "too many losses")
    ev = AuditEvent.objects.get(action="ghost.disabled")
    assert ev.actor == op and ev.reason == "too many losses" and ev.object_id == str(ghost.pk)
    assert ev.before == {"enabled": True, "status": "active", "status_reason": ""}
    assert ev.after == {"enabled": False, "status": "disabled", "status_reason": "too many losses"}

    ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=op, reason="double click")
    assert AuditEvent.objects.filter(action__in=["ghost.disabled", "ghost.enabled"]).count() == 1
    ghost.refresh_from_db()
    assert ghost.status_reason == "too many losses"

    ghost_set_enabled(ghost_id=ghost.pk, enabled=True, actor=op, reason="back on")
    ghost.refresh_from_db()
    assert (ghost.enabled, ghost.status) == (True, GhostStatus.ACTIVE)
    assert AuditEvent.objects.get(action="ghost.enabled").before["status"] == "disabled"


@pytest.mark.parametrize("reason", ["", "   ", None, "x" * 501])
def test_ghost_set_enabled_refuses_bad_reason(desk, make_user, reason):
    ghost = desk["ghost"]
    with pytest.raises(GhostError):
        ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=make_user("olga", "operator"), reason=reason)
    ghost.refresh_from_db()
    assert ghost.enabled and not AuditEvent.objects.filter(action="ghost.disabled").exists()


def test_ghost_set_enabled_unknown_id(desk):
    with pytest.raises(Ghost.DoesNotExist):
        ghost_set_enabled(ghost_id=999_999, enabled=False, actor=None, reason="gone")


def test_ghost_record_evaluation_degrades_and_heals(desk):
    ghost = desk["ghost"]
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nZeroDivisionError: division by zero\n'
    out = ghost_record_evaluation(ghost_id=ghost.pk, error=tb)
    assert out.status == GhostStatus.DEGRADED and out.enabled
    assert out.status_reason == "ZeroDivisionError: division by zero"
    assert out.last_error == tb
    ev = AuditEvent.objects.get(action="ghost.degraded")
    assert ev.actor is None and ev.before["status"] == "active" and ev.after["status"] == "degraded"

    ghost_record_evaluation(ghost_id=ghost.pk, error=tb)  # still degraded: no second audit row
    assert AuditEvent.objects.filter(action="ghost.degraded").count() == 1

    out = ghost_record_evaluation(ghost_id=ghost.pk, error=None)
    assert out.status == GhostStatus.ACTIVE and out.last_error == tb  # traceback kept for operators
    assert AuditEvent.objects.get(action="ghost.active").before["status"] == "degraded"

    ghost_record_evaluation(ghost_id=ghost.pk, error=None)  # clean and active: nothing to record
    assert AuditEvent.objects.filter(action__startswith="ghost.").exclude(action="ghost.created").count() == 2


def test_ghost_record_evaluation_leaves_disabled_ghost_alone(desk):
    ghost = desk["ghost"]
    ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=None, reason="off")
    out = ghost_record_evaluation(ghost_id=ghost.pk, error="boom")
    assert out.status == GhostStatus.DISABLED and out.last_error == ""


# --- revenue targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount,period",
    [("NaN", "day"), (float("nan"), "day"), ("inf", "day"), (-1, "day"), (0, "day"), ("1.234", "day"),
     (1e9, "day"), ("abc", "day"), ("", "day"), (None, "day"), ("25", "year"), ("25", "")],
)
def test_revenue_target_set_refuses_bad_input(desk, amount, period):
    with pytest.raises(TargetError):
        revenue_target_set(ghost_id=desk["ghost"].pk, amount=amount, period=period, actor=None)
    assert not RevenueTarget.objects.exists()
    assert not AuditEvent.objects.filter(action="revenue_target.set").exists()


def test_revenue_target_set_creates_then_updates_one_row(desk, make_user):
    op, ghost = make_user("olga", "operator"), desk["ghost"]
    t = revenue_target_set(ghost_id=ghost.pk, amount="25", period="day", actor=op)
    assert t.amount == Decimal("25.00") and t.period == "day"
    t2 = revenue_target_set(ghost_id=ghost.pk, amount=Decimal("40.5"), period="week", actor=op)
    assert t2.pk == t.pk and RevenueTarget.objects.filter(ghost=ghost).count() == 1
    t.refresh_from_db()
    assert (t.amount, t.period) == (Decimal("40.50"), "week")
    evs = list(AuditEvent.objects.filter(action="revenue_target.set").order_by("id"))
    assert [e.actor for e in evs] == [op, op]
    assert evs[0].before == {} and evs[1].before == {"amount": "25.00", "period": "day"}
    assert evs[1].after == {"amount": "40.50", "period": "week", "ghost": "fader-btc"}


def test_revenue_target_set_portfolio(desk):
    p = revenue_target_set(ghost_id=None, amount="100", period="month", actor=None)
    revenue_target_set(ghost_id=None, amount="120", period="month", actor=None)
    revenue_target_set(ghost_id=desk["ghost"].pk, amount="10", period="day", actor=None)
    assert RevenueTarget.objects.filter(ghost=None).count() == 1
    p.refresh_from_db()
    assert p.amount == Decimal("120.00") and RevenueTarget.objects.count() == 2


# --- signals ------------------------------------------------------------------------------------


def test_signal_record_is_idempotent(desk):
    ghost = desk["ghost"]
    s1, c1 = signal_record(ghost=ghost, bar_time=T0, draft=draft())
    s2, c2 = signal_record(ghost=ghost, bar_time=T0, draft=draft(side=-1))
    assert (c1, c2) == (True, False) and s1.pk == s2.pk
    assert Signal.objects.count() == 1
    assert (s1.side, s1.fate, s1.confidence, s1.max_hold_seconds) == ("long", Fate.PENDING, Decimal("0.7"), 3600)


# --- paper execution ----------------------------------------------------------------------------


def test_signal_execute_paper_opens_position_order_fill(desk):
    ghost = desk["ghost"]
    signal = new_signal(ghost)
    at = T0 + timedelta(minutes=1, seconds=2)
    p = signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=at)
    assert p is not None and p.status == Position.Status.OPEN and p.side == "long"
    assert p.entry_price == Decimal(repr(100 * (1 + SLIP))).quantize(STEP)  # adverse slippage on entry
    # stop/target keep their distance from the reference entry, re-anchored on the fill
    assert p.stop == Decimal(repr(99.0 * (1 + SLIP))).quantize(STEP)
    assert p.time_stop_at == at + timedelta(seconds=3600) and p.opened_at == at
    order = Order.objects.get(position=p)
    assert order.client_order_id == f"hft-{signal.pk}-entry"
    assert (order.purpose, order.side, order.status, order.quantity) == ("entry", "buy", "filled", p.quantity)
    fill = Fill.objects.get(order=order)
    assert fill.price == p.entry_price and fill.quantity == p.quantity and fill.filled_at == at
    assert abs(fill.fee - fill.price * fill.quantity * FEE) <= STEP and p.fees == fill.fee
    signal.refresh_from_db()
    assert signal.fate == Fate.TAKEN

    assert signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=at) is None
    assert (Position.objects.count(), Order.objects.count(), Fill.objects.count()) == (1, 1, 1)
    assert AuditEvent.objects.filter(action="position.opened").count() == 1


def test_signal_execute_paper_disabled_ghost(desk):
    ghost = desk["ghost"]
    signal = new_signal(ghost)
    ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=None, reason="stop")
    assert signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=T0 + timedelta(minutes=1)) is None
    signal.refresh_from_db()
    assert signal.fate == Fate.GHOST_DISABLED and not Position.objects.exists() and not Fill.objects.exists()


def test_signal_execute_paper_position_open_is_not_reversed(desk):
    ghost = desk["ghost"]
    first = open_position(ghost, 0)
    opposite = new_signal(ghost, 5, side=-1)
    assert signal_execute_paper(signal_id=opposite.pk, price=Decimal("101"), at=T0 + timedelta(minutes=6)) is None
    opposite.refresh_from_db()
    assert opposite.fate == Fate.POSITION_OPEN
    assert list(Position.objects.values_list("pk", flat=True)) == [first.pk] and Fill.objects.count() == 1


def test_position_close_at_stop_with_slippage_and_fees_add_up(desk):
    ghost = desk["ghost"]
    p = open_position(ghost)
    at = T0 + timedelta(minutes=10)
    closed = position_close(position_id=p.pk, price=99.0, at=at, reason=ExitReason.STOP)
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == "stop" and closed.closed_at == at
    exit_fill = Fill.objects.get(order__position=p, order__purpose="exit")
    assert exit_fill.price == Decimal(repr(99.0 * (1 - SLIP))).quantize(STEP)  # a sell pays slippage
    assert closed.exit_price == exit_fill.price
    assert Order.objects.get(position=p, purpose="exit").client_order_id == f"hft-{p.signal_id}-exit"
    assert closed.gross_pnl == ((exit_fill.price - p.entry_price) * p.quantity).quantize(STEP) < 0
    assert closed.fees == Fill.objects.filter(order__position=p).aggregate(s=Sum("fee"))["s"]
    assert abs(exit_fill.fee - exit_fill.price * exit_fill.quantity * FEE) <= STEP
    assert selectors.equity() == settings.HFT_START_CAPITAL + closed.gross_pnl - closed.fees
    assert selectors.equity().quantize(Decimal("0.01")) == (
        settings.HFT_START_CAPITAL + closed.net_pnl
    ).quantize(Decimal("0.01"))

    assert position_close(position_id=p.pk, price=50.0, at=at, reason=ExitReason.STOP) is None  # no-op
    assert Fill.objects.count() == 2 and AuditEvent.objects.filter(action="position.closed").count() == 1


def test_position_close_at_target_fills_at_target(desk):
    p = open_position(desk["ghost"])
    closed = position_close(position_id=p.pk, price=float(p.target), at=T0 + timedelta(minutes=9),
                            reason=ExitReason.TARGET)
    assert closed.exit_price == p.target and closed.exit_reason == "target"
    assert closed.gross_pnl == ((p.target - p.entry_price) * p.quantity).quantize(STEP) > 0


def test_short_position_close(desk):
    p = open_position(desk["ghost"], side=-1)
    assert p.side == "short" and p.entry_price == Decimal(repr(100 * (1 - SLIP))).quantize(STEP)
    closed = position_close(position_id=p.pk, price=101.5, at=T0 + timedelta(minutes=9), reason=ExitReason.STOP)
    assert closed.exit_price == Decimal(repr(101.5 * (1 + SLIP))).quantize(STEP)
    assert closed.gross_pnl == ((p.entry_price - closed.exit_price) * p.quantity).quantize(STEP) < 0
    assert Order.objects.get(position=p, purpose="exit").side == "buy"


def test_positions_check_price_stop_target_and_time(desk):
    ghost, inst = desk["ghost"], desk["instrument"]
    p = open_position(ghost)
    at = T0 + timedelta(minutes=3)
    between = float((p.stop + p.target) / 2)
    assert positions_check_price(instrument_id=inst.pk, price=between, at=at) == []
    [closed] = positions_check_price(instrument_id=inst.pk, price=float(p.stop) - 0.01, at=at)
    assert closed.pk == p.pk and closed.exit_reason == "stop"

    p = open_position(ghost, 10)
    [closed] = positions_check_price(instrument_id=inst.pk, price=float(p.target) + 0.5,
                                     at=T0 + timedelta(minutes=13))
    assert closed.exit_reason == "target" and closed.exit_price == p.target

    p = open_position(ghost, 20)
    between = float((p.stop + p.target) / 2)
    assert positions_check_price(instrument_id=inst.pk, price=between, at=p.time_stop_at - timedelta(seconds=1)) == []
    [closed] = positions_check_price(instrument_id=inst.pk, price=between, at=p.time_stop_at)
    assert closed.exit_reason == "time" and closed.exit_price == Decimal(repr(between * (1 - SLIP))).quantize(STEP)
    assert not Position.objects.filter(status="open").exists()


def test_paper_time_stop_due_wins_at_that_price_even_beyond_a_level(desk):
    """Fill conventions (issue 9): on prints, a due time stop exits at the print's price before the levels."""
    ghost, inst = desk["ghost"], desk["instrument"]
    p = open_position(ghost)
    beyond_stop = float(p.stop) - 0.5
    [closed] = positions_check_price(instrument_id=inst.pk, price=beyond_stop, at=p.time_stop_at)
    assert closed.exit_reason == "time"
    assert closed.exit_price == Decimal(repr(beyond_stop * (1 - SLIP))).quantize(STEP)  # a market sell there
    p = open_position(ghost, 10)
    beyond_target = float(p.target) + 0.5
    [closed] = positions_check_price(instrument_id=inst.pk, price=beyond_target, at=p.time_stop_at)
    assert closed.exit_reason == "time"
    assert closed.exit_price == Decimal(repr(beyond_target * (1 - SLIP))).quantize(STEP)
    p = open_position(ghost, 20)  # one second before it is due, the same print is a target
    [closed] = positions_check_price(instrument_id=inst.pk, price=float(p.target) + 0.5,
                                     at=p.time_stop_at - timedelta(seconds=1))
    assert closed.exit_reason == "target" and closed.exit_price == p.target


def test_paper_quantity_is_sized_from_the_fill_price(desk):
    """The manager decides 10 BTC at the 100 reference entry (1 000 notional); the fill at 100.5 + 5 bps
    keeps that notional: qty = 10 x 100 / fill, the backtest's rule (apps.engine.sizing.quantity_at_fill)."""
    signal = new_signal(desk["ghost"])
    p = signal_execute_paper(signal_id=signal.pk, price=Decimal("100.5"), at=T0 + timedelta(minutes=1), quantity=10.0)
    fill = 100.5 * (1 + SLIP)
    assert p.quantity == Decimal(repr(10.0 * 100.0 / fill)).quantize(STEP) < Decimal(10)
    assert abs(p.quantity * p.entry_price - Decimal(1000)) < Decimal("0.000002")


def test_ledger_adds_up_exactly(desk):
    ghost, inst = desk["ghost"], desk["instrument"]
    p1 = open_position(ghost, 0, price="100")
    position_close(position_id=p1.pk, price=float(p1.target), at=T0 + timedelta(minutes=5), reason="target")
    p2 = open_position(ghost, 10, price="100.37", side=-1)
    position_close(position_id=p2.pk, price=101.9, at=T0 + timedelta(minutes=15), reason="stop")
    p3 = open_position(ghost, 20, price="99.13")
    position_close(position_id=p3.pk, price=99.5, at=T0 + timedelta(minutes=40), reason="time")
    p4 = open_position(ghost, 50, price="98.77")  # stays open
    set_last_price(inst, "99.4321")

    closed = Position.objects.filter(status="closed")
    gross = closed.aggregate(s=Sum("gross_pnl"))["s"]
    fees = Fill.objects.aggregate(s=Sum("fee"))["s"]
    p4.refresh_from_db()
    unreal = ((Decimal("99.4321") - p4.entry_price) * p4.quantity).quantize(STEP)
    assert Fill.objects.count() == 7 and closed.count() == 3
    assert selectors.equity() == settings.HFT_START_CAPITAL + gross - fees + unreal
    # the positions' own fee totals are the fills', to the last unit
    assert Position.objects.aggregate(s=Sum("fees"))["s"] == fees
    for p in closed:
        sign = 1 if p.side == "long" else -1
        assert p.gross_pnl == ((p.exit_price - p.entry_price) * p.quantity * sign).quantize(STEP)
    net = sum((p.net_pnl for p in closed), Decimal(0))
    assert selectors.equity() == settings.HFT_START_CAPITAL + net - p4.fees + unreal
    set_last_price(inst, None)  # no price: open position is marked at nothing
    assert selectors.equity() == settings.HFT_START_CAPITAL + gross - fees
