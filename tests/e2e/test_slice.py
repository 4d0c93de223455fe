"""The first slice end to end, with real parts: the sim feed runs as a Celery task in a real worker
process, bars are stored, the ghosts task (same worker, `ghosts` queue) evaluates the spike fader,
the paper executor fills, and the events reach a Channels websocket through the real Redis layer.

The ghost is configured with a lower threshold (0.3 % in 15 min, volume ratio 1.0) so the sim's
ordinary volatility produces a signal within a few simulated hours; the defaults (1.2 %) are tested on
real data in tests/engine.
"""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.dashboard.consumers import DeskConsumer
from apps.ghosts.models import Ghost
from apps.market.models import Candle, FeedStatus
from apps.runtime.tasks import run_feed
from apps.signals.models import Fate, Signal
from apps.trading.models import Fill, Position

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
BOUND_SECONDS = 90  # sim at 1200x: 20 simulated minutes per wall second


def _configure(desk) -> None:
    ghost: Ghost = desk["ghost"]
    ghost.params = {**ghost.params, "spike_threshold_pct": 0.3, "take_profit_pct": 0.25, "min_target_pct": 0.1,
                    "min_stop_pct": 0.3, "min_volume_ratio": 1.0, "cooldown_seconds": 600}
    ghost.save(update_fields=["params"])


async def _stop_feed(instrument_id: int) -> None:
    """Take the feed's lock away: its heartbeat fails and it stops, so it cannot outlive the test."""
    from django.core.cache import cache

    await sync_to_async(cache.delete)(f"feed-lock:{instrument_id}")
    for _ in range(100):
        fs = await FeedStatus.objects.aget(instrument_id=instrument_id)
        if fs.state == FeedStatus.State.STOPPED:
            return
        await asyncio.sleep(0.1)


async def test_sim_feed_to_signal_to_fill_to_websocket(desk, make_user, celery_workers):
    await sync_to_async(_configure)(desk)
    user = await sync_to_async(make_user)("op-e2e", "operator")
    comm = WebsocketCommunicator(DeskConsumer.as_asgi(), "/ws/desk/")
    comm.scope["user"] = user
    connected, _ = await comm.connect()
    assert connected
    instrument_id = desk["instrument"].pk
    started = time.monotonic()
    await sync_to_async(run_feed.delay)(instrument_id, max_seconds=BOUND_SECONDS - 10, speed=1200)

    seen: dict[str, dict] = {}
    order: list[str] = []
    try:
        while time.monotonic() - started < BOUND_SECONDS:
            msg = await comm.receive_json_from(timeout=BOUND_SECONDS)
            kind = msg["type"]
            if kind == "trade.filled" and msg["purpose"] == "entry":
                seen["entry"] = msg
                order.append("entry")
                break
            if kind not in seen:
                seen[kind] = msg
                order.append(kind)
    except TimeoutError:
        pass
    finally:
        await comm.disconnect()
        await _stop_feed(instrument_id)
    elapsed = time.monotonic() - started
    print(f"\nslice: first entry fill after {elapsed:.1f} s wall; events in order of first sight: {order}")
    assert "bar.closed" in seen and "market.tick" in seen
    assert "signal.created" in seen, f"no signal within {BOUND_SECONDS}s; saw {order}"
    assert "entry" in seen, f"no fill within {BOUND_SECONDS}s; saw {order}"
    assert order.index("bar.closed") < order.index("signal.created") < order.index("entry")

    fill_event = seen["entry"]
    position = await Position.objects.select_related("signal").aget(pk=fill_event["position_id"])
    signal = position.signal
    assert signal.fate == Fate.TAKEN
    # The signal's bar is stored and the fill happened after that bar closed (no look-ahead fill).
    assert await Candle.objects.filter(instrument_id=instrument_id, open_time=signal.bar_time).aexists()
    fill = await Fill.objects.filter(order__position=position, order__purpose="entry").aget()
    assert fill.filled_at.timestamp() >= signal.bar_time.timestamp() + 60
    assert fill.fee > 0 and abs(float(fill.fee) - float(fill.price * fill.quantity) * 0.001) < 1e-6
    assert (signal.side == "short") == (float(position.stop) > float(position.entry_price))
    assert await Signal.objects.filter(ghost=desk["ghost"]).acount() >= 1
    fs = await FeedStatus.objects.aget(instrument_id=instrument_id)
    assert fs.last_price is not None
