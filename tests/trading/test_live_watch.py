"""The protective-stop watch (issue 13, live trading safety): beat's `protect_watch_task` checks every live
position's stop on the exchange between reconciliations. ccxt's real binance class against the local fake Binance
spot server (tests/trading/fake_binance.py), the test Redis (locks, the alert queue) and the test database.

What the fake's account and order book say is the truth here: a stop cancelled "by hand" is cancelled in the
fake the way Binance's DELETE /api/v3/order does it, and the watch must find it and place a new one.
"""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from apps.alerts.models import AlertDelivery
from apps.alerts.services import alert_channel_create
from apps.audit.models import AuditEvent
from apps.trading import live_executor
from apps.trading.execution import position_exit
from apps.trading.live_watch import WATCH_LOCK, protect_watch
from apps.trading.models import ExitReason, Order, Position
from tests.trading.test_live import AT
from tests.trading.test_live_protect import HELD, _open

pytestmark = pytest.mark.django_db


def _cancel_by_hand(fake, client_id: str) -> None:
    """What the operator's click on the exchange's website does: Binance's cancel of that order."""
    with fake._lock:
        status, _ = fake._cancel_order({"symbol": "BTCUSDT", "origClientOrderId": client_id})
    assert status == 200


def _resting_stops(fake) -> list[dict]:
    return [o for o in fake.orders if o["type"].startswith("STOP_LOSS") and o["status"] == "NEW"]


@pytest.fixture
def channel():
    """A webhook channel subscribed to protective-stop alerts (delivery rows are what the test reads)."""
    return alert_channel_create(actor=None, kind="webhook", name="desk-hook", events=["protective_stop"],
                                secret="http://127.0.0.1:9/hook")


def test_a_stop_cancelled_on_the_exchange_is_placed_again_audited_and_alerted(desk, live_settings, channel,
                                                                                django_capture_on_commit_callbacks):
    fake = live_settings
    position = _open(desk)
    assert protect_watch() == {"kept": 1}  # in step: nothing placed, nothing written
    assert not AuditEvent.objects.filter(action__startswith="protect_watch.").exists()

    _cancel_by_hand(fake, f"hft-{position.signal_id}-stop1")
    assert _resting_stops(fake) == [] and fake.locked["BTC"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert protect_watch() == {"placed": 1}
    [stop] = _resting_stops(fake)
    assert stop["clientOrderId"] == f"hft-{position.signal_id}-stop2"  # a fresh id: the old one is used
    assert (Decimal(stop["origQty"]), Decimal(stop["stopPrice"])) == (HELD, position.stop.quantize(Decimal("0.01")))
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    assert (row.client_order_id, row.status) == (stop["clientOrderId"], Order.Status.NEW)
    audit = AuditEvent.objects.get(action="protect_watch.placed", object_id=str(position.pk))
    assert "was canceled" in audit.reason and audit.after == {"outcome": "placed"}
    alert = AlertDelivery.objects.get(event="protective_stop")
    assert alert.channel_key and alert.data["outcome"] == "placed" and alert.data["position_id"] == position.pk

    assert protect_watch() == {"kept": 1}  # and quiet again
    assert AuditEvent.objects.filter(action__startswith="protect_watch.").count() == 1


def test_a_stop_that_filled_while_nobody_looked_closes_the_position_from_its_fill(desk, live_settings):
    fake = live_settings
    position = _open(desk)
    [filled] = fake.set_price(Decimal("94000.00"))  # through the stop, above its limit: it fills on the exchange
    assert protect_watch() == {"filled": 1}
    closed = Position.objects.get(pk=position.pk)
    assert closed.status == Position.Status.CLOSED and closed.exit_reason == ExitReason.STOP
    assert closed.exit_price == Decimal("94000.00")
    assert [p["type"] for p in fake.posted_orders()] == ["MARKET", "STOP_LOSS_LIMIT"]  # nothing sold twice
    assert Order.objects.get(position=position, purpose=Order.Purpose.PROTECT).status == Order.Status.FILLED
    assert AuditEvent.objects.filter(action="protect_watch.filled", object_id=str(position.pk)).count() == 1
    assert protect_watch() == {}  # closed, its stop done: nothing left to watch


def test_a_state_that_needs_a_person_is_reported_once_not_every_run(desk, live_settings, channel,
                                                                  django_capture_on_commit_callbacks):
    fake = live_settings
    position = _open(desk)
    _cancel_by_hand(fake, f"hft-{position.signal_id}-stop1")
    fake.balances["BTC"] = Decimal(0)  # and the coins sold by hand: nothing left for a stop to hold
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):
            assert protect_watch() == {"unprotected": 1}
    assert AuditEvent.objects.filter(action="protect_watch.unprotected", object_id=str(position.pk)).count() == 1
    assert AuditEvent.objects.filter(action="position.unprotected", object_id=str(position.pk)).count() == 1
    assert AlertDelivery.objects.filter(event="protective_stop").count() == 1
    assert _resting_stops(fake) == []


def test_one_watch_at_a_time_and_none_when_live_trading_is_off(desk, live_settings, settings):
    from django.core.cache import cache

    fake = live_settings
    _open(desk)
    requests = len(fake.requests)
    cache.add(WATCH_LOCK, 1, 60)  # another watch is running
    assert protect_watch() == {"skipped": 1}
    cache.delete(WATCH_LOCK)
    settings.HFT_LIVE_TRADING = False
    assert protect_watch() == {}
    assert len(fake.requests) == requests  # neither asked the exchange anything


def test_a_position_whose_orders_are_busy_is_left_to_the_next_round(desk, live_settings):
    fake = live_settings
    position = _open(desk)
    _cancel_by_hand(fake, f"hft-{position.signal_id}-stop1")
    with live_executor.position_guard(position.pk, wait_s=0) as held:  # an exit or a stop move in progress
        assert held
        assert protect_watch() == {"busy": 1}
        assert _resting_stops(fake) == []
    assert protect_watch() == {"placed": 1}


@pytest.mark.django_db(transaction=True)
def test_the_watch_racing_the_desks_exit_leaves_no_stop_behind(desk, live_settings):
    """The exit cancels the stop, then sells at market. A watch running in between would read the stop as
    cancelled and place a new one: on spot it would hold the coins the exit sells (the sell is refused) or rest
    after the exit as a second sell. The position guard keeps them apart: whatever the interleaving, the
    exchange ends with no resting stop, one market sell, and the account's BTC at dust."""
    fake = live_settings
    stop = threading.Event()
    runs: list[dict] = []

    def watch_loop() -> None:
        try:
            while not stop.is_set():
                runs.append(protect_watch())
        finally:
            connection.close()

    for minute in range(5):
        position = _open(desk, minute)
        watcher = threading.Thread(target=watch_loop)
        watcher.start()
        try:
            closed = position_exit(position_id=position.pk, price=95760.0, at=AT + timedelta(minutes=minute + 1),
                                   reason=ExitReason.TARGET)
            for _ in range(100):  # the exit may have been left to the next price check while the watch held it
                if closed is not None:
                    break
                closed = position_exit(position_id=position.pk, price=95760.0, at=AT + timedelta(minutes=minute + 1),
                                       reason=ExitReason.TARGET)
        finally:
            stop.set()
            watcher.join(30)
            stop.clear()
        assert closed is not None and closed.status == Position.Status.CLOSED
        assert _resting_stops(fake) == [], f"a stop rests after the exit (watch runs: {runs[-5:]})"
        assert fake.locked["BTC"] == 0 and fake.balances["BTC"] < Decimal("0.00002")
    assert len(runs) > 3  # the watch really ran alongside
    sells = [p for p in fake.posted_orders() if p["type"] == "MARKET" and p["side"] == "SELL"]
    assert len(sells) == 5


def test_beat_runs_the_watch_with_an_expiry_below_its_interval(settings):
    from apps.trading.live_watch import PROTECT_WATCH_S, WATCH_LOCK_S
    from apps.trading.tasks import protect_watch_task

    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == protect_watch_task.name)
    assert entry["schedule"] == PROTECT_WATCH_S and 0 < entry["options"]["expires"] < entry["schedule"]
    assert entry["options"]["queue"] == "default"  # not behind feeds, ghosts or lab runs
    # a run killed at its hard limit leaves a lock that lapses before the next-but-one run
    assert protect_watch_task.time_limit < WATCH_LOCK_S < 2 * PROTECT_WATCH_S
