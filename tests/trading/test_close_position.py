"""Issue 14: an operator closes ONE open position with a reason (apps.trading.execution.position_close_manual
behind POST /positions/<id>/close/): through the execution door at the feed's last price, with fees, the ledger
and the P&L day rows right, audited with the user and the reason, pushed to browsers and alerted; refused
without a reason, without a fresh price, for a viewer, a forged POST, an unknown id and a second close."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse

from apps.alerts.models import AlertDelivery
from apps.alerts.services import alert_channel_create
from apps.audit.models import AuditEvent
from apps.dashboard.consumers import DeskConsumer
from apps.engine.types import Draft
from apps.ghosts.services import ghost_create
from apps.market.models import FeedStatus
from apps.market.prices import price_set
from apps.revenue.models import PnlDay
from apps.signals.services import signal_record
from apps.trading.execution import PositionAlreadyClosed, position_close_manual
from apps.trading.models import Fill, Order, Position
from apps.trading.services import signal_execute_paper

T0 = datetime(2026, 1, 5, 23, 50, tzinfo=UTC)  # the close's data time is the next UTC day: its trading day
CENT = Decimal("0.01")


def open_paper(ghost, *, entry: float = 100.0, side: int = 1, minute: int = 0) -> Position:
    bar = T0 + timedelta(minutes=minute)
    draft = Draft(side=side, confidence=0.7, priority=2, entry=entry, stop=entry * (1 - side * 0.02),
                  target=entry * (1 + side * 0.02), size_mult=1.0, max_hold_s=0.0, reason="test",
                  bar_time=pd.Timestamp(bar))
    signal, _ = signal_record(ghost=ghost, bar_time=bar, draft=draft)
    pos = signal_execute_paper(signal_id=signal.pk, price=Decimal(repr(entry)), at=bar + timedelta(minutes=1))
    assert pos is not None
    return pos


def live_price(instrument, price: float, at: datetime, state: str = "connected") -> None:
    """The feed is up and its last trade was `price` at data time `at` (what a running feed leaves behind)."""
    FeedStatus.objects.filter(instrument=instrument).update(state=state, last_price=price, last_trade_at=at)
    price_set(instrument.pk, price, int(at.timestamp() * 1000))


@pytest.mark.django_db
def test_operator_closes_one_paper_position_with_fees_ledger_audit_and_alert(
        desk, operator, op_client, django_capture_on_commit_callbacks):
    alert_channel_create(actor=None, kind="webhook", name="hook", events=["fill"], chat_id="",
                         secret="https://hooks.example.invalid/x", enabled=True)
    pos = open_paper(desk["ghost"])
    second = ghost_create(name="fader-2", kind="spike_fader", instrument=desk["instrument"], enabled=True)
    other = open_paper(second, entry=101.0, side=-1, minute=1)  # stays open: only the chosen one closes
    at = T0 + timedelta(minutes=20)
    live_price(desk["instrument"], 103.0, at)
    AlertDelivery.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        r = op_client.post(reverse("dashboard:position-close", args=[pos.pk]), {"reason": "news in 5 min"})
    assert r.status_code == 302
    pos.refresh_from_db()
    assert pos.status == "closed" and pos.exit_reason == "manual" and pos.closed_at == at
    # A market exit: slippage against the long, the taker fee on the exit fill, P&L from the fills.
    exit_fill = Fill.objects.get(order__position=pos, order__purpose=Order.Purpose.EXIT)
    entry_fill = Fill.objects.get(order__position=pos, order__purpose=Order.Purpose.ENTRY)
    assert exit_fill.price < Decimal("103") and exit_fill.filled_at == at
    assert abs(exit_fill.fee - exit_fill.price * pos.quantity * Decimal("0.001")) < Decimal("0.00000001")
    assert pos.fees == entry_fill.fee + exit_fill.fee
    assert abs(pos.gross_pnl - (exit_fill.price - pos.entry_price) * pos.quantity) < CENT
    assert Position.objects.get(pk=other.pk).status == "open"
    # The P&L day row of the close's trading day (data time), equal to the position to the cent.
    day = PnlDay.objects.get(ghost=pos.ghost, instrument=pos.instrument, day=at.date())
    assert (day.trades, day.gross, day.fees) == (1, pos.gross_pnl, pos.fees)
    # Audited with who and why; the fill alert went out with the manual exit.
    ev = AuditEvent.objects.get(action="position.closed_manually")
    assert ev.actor_id == operator.pk and ev.reason == "news in 5 min" and ev.object_id == str(pos.pk)
    fill_alert, by_alert = AlertDelivery.objects.order_by("id")
    assert fill_alert.event == "fill" and fill_alert.data["exit_reason"] == "manual"
    assert fill_alert.data["position_id"] == pos.pk
    assert by_alert.event == "fill" and by_alert.title == f"Position #{pos.pk} closed by {operator.username}"
    assert by_alert.data["reason"] == "news in 5 min" and "news in 5 min" in by_alert.body
    # A second close says so and writes nothing.
    r = op_client.post(reverse("dashboard:position-close", args=[pos.pk]), {"reason": "again"}, follow=True)
    assert "already closed" in r.content.decode()
    assert Fill.objects.filter(order__position=pos).count() == 2
    assert AuditEvent.objects.filter(action="position.closed_manually").count() == 1
    with pytest.raises(PositionAlreadyClosed):
        position_close_manual(position_id=pos.pk, reason="again", user=operator)


@pytest.mark.django_db
@pytest.mark.parametrize("case, message", [
    ("no reason", "a reason is required"),
    ("feed down", "no fresh price"),
    ("no price", "no fresh price"),
    ("old price", "older than the position"),
])
def test_refused_closes_write_nothing(desk, op_client, case, message):
    pos = open_paper(desk["ghost"])
    reason = "" if case == "no reason" else "risk off"
    if case == "feed down":
        live_price(desk["instrument"], 103.0, T0 + timedelta(minutes=5), state="error")
    elif case == "old price":
        live_price(desk["instrument"], 103.0, T0 - timedelta(minutes=5))
    elif case == "no reason":
        live_price(desk["instrument"], 103.0, T0 + timedelta(minutes=5))
    else:
        FeedStatus.objects.filter(instrument=desk["instrument"]).update(state="connected")
    r = op_client.post(reverse("dashboard:position-close", args=[pos.pk]), {"reason": reason}, follow=True)
    assert r.status_code == 200 and message in r.content.decode()
    assert Position.objects.get(pk=pos.pk).status == "open"
    assert not AuditEvent.objects.filter(action="position.closed_manually").exists()


@pytest.mark.django_db
def test_viewer_forged_post_and_unknown_id(desk, operator, viewer_client):
    pos = open_paper(desk["ghost"])
    live_price(desk["instrument"], 103.0, T0 + timedelta(minutes=5))
    url = reverse("dashboard:position-close", args=[pos.pk])
    assert viewer_client.post(url, {"reason": "x"}).status_code == 403
    forged = Client(enforce_csrf_checks=True)  # an operator's session, a POST from another site (no token)
    forged.force_login(operator)
    assert forged.post(url, {"reason": "x"}).status_code == 403
    assert Position.objects.get(pk=pos.pk).status == "open"
    op = Client()
    op.force_login(operator)
    assert op.post(reverse("dashboard:position-close", args=[pos.pk + 999]), {"reason": "x"}).status_code == 404
    assert op.get(url).status_code == 405


@pytest.mark.django_db
def test_overview_shows_the_form_to_operators_only(desk, op_client, viewer_client):
    pos = open_paper(desk["ghost"])
    url = reverse("dashboard:position-close", args=[pos.pk])
    assert url in op_client.get(reverse("dashboard:overview")).content.decode()
    assert url not in viewer_client.get(reverse("dashboard:overview")).content.decode()


@pytest.mark.django_db(transaction=True)
async def test_the_close_reaches_a_browser(desk, operator, viewer):
    pos = await sync_to_async(open_paper)(desk["ghost"])
    await sync_to_async(live_price)(desk["instrument"], 99.0, T0 + timedelta(minutes=7))
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = viewer
    ok, _ = await comm.connect()
    assert ok
    try:
        await sync_to_async(position_close_manual)(position_id=pos.pk, reason="flat into the close", user=operator)
        deadline = time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "no trade.filled for the manual close"
            msg = await comm.receive_json_from(timeout=5)
            if msg.get("type") == "trade.filled" and msg.get("position_id") == pos.pk:
                break
        assert msg["purpose"] == "exit" and msg["exit_reason"] == "manual" and msg["net_pnl"] < 0
    finally:
        await comm.disconnect()
