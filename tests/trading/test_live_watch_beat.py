"""The protective-stop watch as the desk runs it (issue 13): real `celery beat` (the desk's CELERY_BEAT_SCHEDULE) and
a real worker trading live against the local fake Binance (tests/trading/live_worker_settings.py), Redis and the
test database. A stop cancelled by hand on the exchange after the worker's start-up reconciliation is back on the
exchange within one watch interval, with its audit row, and nobody restarted anything.
"""

import json
import time

import pytest

from apps.audit.models import AuditEvent
from apps.trading.live_watch import PROTECT_WATCH_S
from apps.trading.models import Order
from tests.e2e.procs import beat_start, foreign_workers, proc_kill, worker_log, worker_start
from tests.trading.fake_binance import API_KEY, API_SECRET
from tests.trading.test_live_protect import _open

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _wait(check, timeout: float, what: str, *procs) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(worker_log(p)[-2000:] for p in procs if hasattr(p, "log_path"))
            raise AssertionError(f"{what} within {timeout:.0f} s\n{logs}")
        time.sleep(0.5)


def test_beat_puts_back_a_stop_cancelled_by_hand_while_the_desk_runs(desk, live_settings, tmp_path):
    others = foreign_workers(set())
    assert not others, f"other Celery workers share this broker and would take the tasks: {others}"
    fake = live_settings
    position = _open(desk)  # entry and stop1, placed by this process
    first = f"hft-{position.signal_id}-stop1"
    env = {"DJANGO_SETTINGS_MODULE": "tests.trading.live_worker_settings", "HFT_TEST_FAKE_BINANCE": json.dumps(
        fake.urls()), "HFT_LIVE_TRADING": "1", "HFT_BINANCE_API_KEY": API_KEY, "HFT_BINANCE_SECRET": API_SECRET}
    worker = worker_start("watch1", queues="default", concurrency=1, env=env)
    beat = None
    try:
        # the worker's start-up reconciliation has run (and found the stop in step) before the hand cancel
        _wait(lambda: AuditEvent.objects.filter(action="reconcile.run").exists(), 30, "no start-up reconcile", worker)
        with fake._lock:
            status, _ = fake._cancel_order({"symbol": "BTCUSDT", "origClientOrderId": first})
        assert status == 200
        cancelled_at = time.monotonic()
        beat = beat_start(tmp_path)
        _wait(lambda: Order.objects.filter(position=position, purpose=Order.Purpose.PROTECT,
                                           client_order_id=f"hft-{position.signal_id}-stop2").exists(),
              PROTECT_WATCH_S + 20, "the watch did not put the stop back", worker)
        elapsed = time.monotonic() - cancelled_at
    finally:
        if beat is not None:
            proc_kill(beat)
        proc_kill(worker)
    resting = [o for o in fake.orders if o["type"].startswith("STOP_LOSS") and o["status"] == "NEW"]
    assert [o["clientOrderId"] for o in resting] == [f"hft-{position.signal_id}-stop2"]
    assert AuditEvent.objects.filter(action="protect_watch.placed", object_id=str(position.pk)).count() == 1
    assert elapsed < PROTECT_WATCH_S + 20
