"""A perpetual position whose exchange stop fired while no worker ran (issue 13, live trading safety): the next
worker's start-up reconciliation closes it from the stop's fill. A real Celery worker trading live on binanceusdm
against the local fake USDⓈ-M server (tests/fakes/binance_usdm.py, settings tests/trading/live_worker_settings.py),
Redis and the test database.
"""

import json
import time
from decimal import Decimal

import pytest

from apps.audit.models import AuditEvent
from apps.trading.models import ExitReason, Fill, Order, Position
from tests.e2e.procs import foreign_workers, proc_kill, worker_log, worker_start
from tests.trading.fake_binance import API_KEY, API_SECRET
from tests.trading.test_live_futures import _open, _trade

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_a_stop_fired_while_the_desk_was_down_is_recorded_by_the_next_workers_reconcile(usdm):
    others = foreign_workers(set())
    assert not others, f"other Celery workers share this broker and would take the tasks: {others}"
    fake, ghost = usdm
    wallet = fake.wallet
    position = _open(ghost)  # entry + reduce-only stop, by this process; no worker runs
    [fired] = fake.set_price(Decimal("93900.0"))
    assert fake.position == 0 and Position.objects.get(pk=position.pk).status == Position.Status.OPEN
    env = {"DJANGO_SETTINGS_MODULE": "tests.trading.live_worker_settings", "HFT_TEST_FAKE_BINANCE": json.dumps(
        fake.urls()), "HFT_LIVE_TRADING": "1", "HFT_BINANCEUSDM_API_KEY": API_KEY,
        "HFT_BINANCEUSDM_SECRET": API_SECRET}
    posted = len(fake.posted("/fapi/v1/order")) + len(fake.posted("/fapi/v1/algoOrder"))
    worker = worker_start("usdm1", queues="default", concurrency=1, env=env)
    try:
        deadline = time.monotonic() + 60
        while Position.objects.get(pk=position.pk).status != Position.Status.CLOSED:
            assert time.monotonic() < deadline, worker_log(worker)[-3000:]
            time.sleep(0.5)
    finally:
        proc_kill(worker)
    closed = Position.objects.get(pk=position.pk)
    trade = _trade(fake, fired["actualOrderId"])
    assert closed.exit_reason == ExitReason.STOP and closed.exit_price == Decimal(trade["price"])
    row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
    assert row.status == Order.Status.FILLED and Fill.objects.get(order=row).quantity == Decimal(trade["qty"])
    assert abs(closed.net_pnl - (fake.wallet - wallet)) < Decimal("0.0001")  # the ledger is the account
    fixed = AuditEvent.objects.filter(action="reconcile.fixed", after__kind="protect_filled")
    assert fixed.count() == 1 and row.client_order_id in fixed.get().reason
    # the worker sent nothing: it read the exchange and wrote the ledger
    assert len(fake.posted("/fapi/v1/order")) + len(fake.posted("/fapi/v1/algoOrder")) == posted
