"""A desk killed while a live position is open (issue 12, live trading safety), with real processes: a prefork
Celery worker trading live against the local fake Binance (tests/trading/live_worker_settings.py), Redis, and
the test database.

1. The worker evaluates a REAL long spike bar of the 90-day Binance BTC/USDT 1m file (the default spike fader
   fires on it), buys at market on the fake and places the position's protective stop there.
2. The whole worker is SIGKILLed (main and pool processes, as an OOM kill or a lost host): nobody of the desk
   is left. The market falls through the stop ON THE FAKE EXCHANGE, which fills the stop.
3. A new worker starts: its start-up reconciliation (the worker_ready hook) finds the stop filled and closes
   the position from the exchange's fill. Afterwards the restarted desk's price check at a price through the
   stop, and reconcile again, send nothing: no second exit.
"""

import json
import time
from decimal import Decimal

import pandas as pd
import pytest

from apps.audit.models import AuditEvent
from apps.engine.registry import warmup_minutes_for
from apps.engine.spike_fader import SpikeFaderConfig, evaluate
from apps.market.models import Candle
from apps.market.prices import price_set
from apps.runtime.tasks import evaluate_bar
from apps.trading.models import ExitReason, Fill, Mode, Order, Position
from tests.datafiles import BTC_90D, load_freqtrade_1m
from tests.e2e.procs import foreign_workers, group_pids, proc_kill, worker_log, worker_start
from tests.trading.fake_binance import API_KEY, API_SECRET, FakeBinanceSpot

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
WARM = pd.Timedelta(hours=5)


def _long_spike_bar() -> tuple[pd.DataFrame, pd.Timestamp]:
    """The first bar of the real file on which the default spike fader goes long (spot cannot short)."""
    btc = load_freqtrade_1m(BTC_90D)
    drafts = evaluate(btc, SpikeFaderConfig())
    longs = drafts.index[drafts["side"] > 0]
    return btc, next(t for t in longs if t - btc.index[0] > WARM and t + pd.Timedelta("1min") in btc.index)


def _store_window(instrument, btc: pd.DataFrame, t: pd.Timestamp, minutes: int) -> None:
    Candle.objects.bulk_create([
        Candle(instrument=instrument, open_time=ts.to_pydatetime(),
               **{k: Decimal(repr(float(r[k]))) for k in ("open", "high", "low", "close", "volume")})
        for ts, r in btc.loc[t - pd.Timedelta(minutes=minutes): t].iterrows()
    ])


def _wait(predicate, timeout: float, what: str, worker) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s; worker log:\n{worker_log(worker)[-3000:]}")
        time.sleep(0.2)


@pytest.fixture
def fake_exchange():
    with FakeBinanceSpot() as fake:
        yield fake


def test_desk_killed_with_an_open_position_is_closed_by_the_exchange_stop_on_restart(
        desk, fake_exchange, settings, monkeypatch):
    others = foreign_workers(set())
    assert not others, f"other Celery workers share this broker and would take the tasks: {others}"
    fake = fake_exchange
    inst = desk["instrument"]
    btc, t = _long_spike_bar()
    minutes = warmup_minutes_for(desk["ghost"].kind, desk["ghost"].params) + 1
    _store_window(inst, btc, t, minutes)
    next_open = Decimal(repr(float(btc.loc[t + pd.Timedelta("1min"), "open"])))
    fake.price = next_open
    env = {"DJANGO_SETTINGS_MODULE": "tests.trading.live_worker_settings", "HFT_TEST_FAKE_BINANCE": json.dumps(
        fake.urls()), "HFT_LIVE_TRADING": "1", "HFT_BINANCE_API_KEY": API_KEY, "HFT_BINANCE_SECRET": API_SECRET}

    worker = worker_start("live1", queues="ghosts,default", concurrency=1, env=env)
    try:
        price_set(inst.pk, float(next_open), int(t.timestamp() * 1000) + 60_000 + 250)
        evaluate_bar.delay(inst.pk, t.to_pydatetime().isoformat()).get(timeout=60)
        position = Position.objects.get(ghost=desk["ghost"])
        assert position.mode == Mode.LIVE and position.status == Position.Status.OPEN, worker_log(worker)[-3000:]
        row = Order.objects.get(position=position, purpose=Order.Purpose.PROTECT)
        stop = fake.order_by_client_id(row.client_order_id)
        assert (stop["type"], stop["side"], stop["status"]) == ("STOP_LOSS_LIMIT", "SELL", "NEW")
        assert Decimal(stop["stopPrice"]) == row.trigger_price == position.stop.quantize(Decimal("0.01"))
    finally:
        proc_kill(worker)  # SIGKILL: main and pool processes
    assert not group_pids(worker, wait_s=5)

    # The desk is gone; the market falls through the stop on the exchange, above the stop-limit's limit.
    crash_price = (row.trigger_price * Decimal("0.998")).quantize(Decimal("0.01"))
    assert [o["clientOrderId"] for o in fake.set_price(crash_price)] == [row.client_order_id]
    requests_before_restart = len(fake.requests)
    position.refresh_from_db()
    assert position.status == Position.Status.OPEN  # nobody recorded anything yet

    worker = worker_start("live2", queues="ghosts,default", concurrency=1, env=env)
    try:
        _wait(lambda: Position.objects.get(pk=position.pk).status == Position.Status.CLOSED, 60,
              "the restarted desk did not close the position", worker)
    finally:
        proc_kill(worker)

    closed = Position.objects.get(pk=position.pk)
    assert closed.exit_reason == ExitReason.STOP and closed.exit_price == crash_price
    row.refresh_from_db()
    fill = Fill.objects.get(order=row)
    assert row.status == Order.Status.FILLED and (fill.price, fill.quantity) == (crash_price, row.quantity)
    assert not Order.objects.filter(position=position, purpose=Order.Purpose.EXIT).exists()
    fixed = AuditEvent.objects.filter(action="reconcile.fixed", after__kind="protect_filled")
    assert fixed.count() == 1 and row.client_order_id in fixed.get().reason
    assert AuditEvent.objects.get(action="position.closed", object_id=str(position.pk)).after["obtained"] == (
        "reconcile: stop filled on the exchange")
    # What the restarted desk sent: lookups only (no order, no cancel).
    assert {m for m, _, _ in fake.requests[requests_before_restart:]} == {"GET"}
    assert [(p["type"], p["side"]) for p in fake.posted_orders()] == [("MARKET", "BUY"), ("STOP_LOSS_LIMIT", "SELL")]
    # The ledger is the cash: quote flow plus the BTC dust at the entry price.
    usdt_delta = fake.balances["USDT"] - Decimal("100000")
    assert abs(closed.net_pnl - (usdt_delta + fake.balances["BTC"] * closed.entry_price)) < Decimal("0.0001")

    # No double exit: the restarted feed's price check through the stop, and reconcile again, send nothing.
    from apps.trading.execution import positions_check_price
    from apps.trading.live_client import live_clients_clear
    from apps.trading.live_reconcile import live_reconcile

    settings.HFT_LIVE_TRADING = True
    settings.HFT_LIVE_CCXT_CONFIG = {"urls": {"api": fake.urls()}, "enableRateLimit": False}
    monkeypatch.setenv("HFT_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("HFT_BINANCE_SECRET", API_SECRET)
    live_clients_clear()
    try:
        assert positions_check_price(instrument_id=inst.pk, price=float(crash_price) - 100, at=closed.closed_at) == []
        assert live_reconcile(exchange_code="binance").findings == []
    finally:
        live_clients_clear()
    assert len(fake.posted_orders()) == 2 and not fake.cancel_requests()
