"""What an operator's close of one paper position costs (issue 14: POST /positions/<id>/close/).

Setup (not timed): a throwaway SQLite DB (WAL, as `make run`), a redis-server on a free port (price cache, channel
layer for the push), one instrument with its feed "connected" and a last price cached, N ghosts with one open
paper position each (opened through the real signal/fill services), and one webhook channel subscribed to fills
(the alerts are queued for a broker that is this Redis; nothing is delivered).

Timed: each close through Django's test Client as a signed-in operator (the whole view: role check, the service
with its fresh-price check, the close in the fill model, P&L day row, audit, the push to the channel layer and
the two alerts' delivery rows), one position after another; p50/p95/max printed with os.getloadavg().

Usage: .venv/bin/python benchmarks/close_position.py [N=200]
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.throwaway import throwaway_desk  # noqa: E402 - after the path


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with throwaway_desk(HFT_LIVE_TRADING="0"):
        run_bench(n)


def run_bench(n: int) -> None:
    import django

    django.setup()
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    import pandas as pd
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from apps.accounts.services import user_ensure
    from apps.alerts.services import alert_channel_create
    from apps.engine.types import Draft
    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, FeedStatus, Instrument
    from apps.market.prices import price_set
    from apps.signals.services import signal_record
    from apps.trading.models import Position
    from apps.trading.services import signal_execute_paper

    call_command("migrate", verbosity=0)
    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    ex = Exchange.objects.create(code="binance", name="Binance")
    inst = Instrument.objects.create(exchange=ex, symbol="BTC/USDT", base="BTC", quote="USDT")
    at = t0 + timedelta(hours=2)
    FeedStatus.objects.create(instrument=inst, source="sim", state="connected", last_price=101, last_trade_at=at)
    price_set(inst.pk, 101.0, int(at.timestamp() * 1000))
    alert_channel_create(actor=None, kind="webhook", name="hook", events=["fill"], chat_id="",
                         secret="https://hooks.example.invalid/x", enabled=True)
    ids = []
    for i in range(n):
        ghost = ghost_create(name=f"fader-{i}", kind="spike_fader", instrument=inst, enabled=True)
        bar = t0 + timedelta(minutes=i % 60)
        draft = Draft(side=1, confidence=0.7, priority=2, entry=100.0, stop=98.0, target=102.0, size_mult=1.0,
                      max_hold_s=0.0, reason="bench", bar_time=pd.Timestamp(bar))
        signal, _ = signal_record(ghost=ghost, bar_time=bar, draft=draft)
        pos = signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=bar + timedelta(minutes=1),
                                   quantity=0.01)
        ids.append(pos.pk)
    op, _ = user_ensure(username="olga", role="operator", password="olga-bench-password-123")
    client = Client(HTTP_HOST="127.0.0.1")  # an allowed host (the test client's "testserver" is not)
    client.force_login(op)
    times = []
    for pk in ids:
        start = time.perf_counter()
        r = client.post(reverse("dashboard:position-close", args=[pk]), {"reason": "bench"})
        times.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 302, r.status_code
    assert not Position.objects.filter(status="open").exists()
    times.sort()
    p95 = times[int(0.95 * (len(times) - 1))]
    print(f"close one paper position (POST /positions/<id>/close/, {n} closes, SQLite + Redis): "
          f"p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms; "
          f"load {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
