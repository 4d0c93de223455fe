"""A feed whose runner stopped beating shows as down (issue 12, faults).

The runner of a feed renews its Redis lock (apps.market.tasks, LOCK_TTL 15 s) on every loop. While its worker was
dead, the stored FeedStatus kept saying "connected", and so did state.json, the feed card and the header. Now rows
read for display (apps.market.selectors.feed_statuses) say "down" once the lock has lapsed, with the time since
the last trade; Redis unreachable makes every running feed down (no runner can beat).

Against the session's real Redis and database; the last test SIGKILLs a real worker running the sim feed.
"""

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from apps.market.models import Candle, FeedStatus
from apps.market.tasks import LOCK_TTL, _lock_key
from apps.runtime.tasks import run_feed
from tests.conftest import free_port
from tests.e2e.procs import foreign_workers, proc_kill, worker_start


def _feed_event(client, instrument_id: int) -> dict:
    events = client.get("/state.json").json()["events"]
    return next(e for e in events if e["type"] == "feed.status" and e["instrument_id"] == instrument_id)


def _set_feed(instrument_id: int, *, state: str, source: str, last_trade_s_ago: float, updated_s_ago: float) -> None:
    now = timezone.now()
    FeedStatus.objects.filter(instrument_id=instrument_id).update(
        state=state, source=source, last_price=101_000, last_trade_at=now - timedelta(seconds=last_trade_s_ago),
        updated_at=now - timedelta(seconds=updated_s_ago), last_error="",
    )


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["live", "sim"])
def test_connected_feed_without_heartbeat_shows_down_with_time_since_last_trade(viewer_client, desk, source):
    inst = desk["instrument"].pk
    # live: the trade's own time is wall time; sim: its trades carry data time (here far ahead), and the feed last
    # reported (updated_at) 95 s ago
    _set_feed(inst, state="connected", source=source, last_trade_s_ago=95 if source == "live" else -3600,
              updated_s_ago=95)
    ev = _feed_event(viewer_client, inst)
    assert ev["state"] == "down"
    assert ev["heartbeat_lapsed"] is True
    assert 94 <= ev["silent_s"] <= 100
    assert "no heartbeat from its runner" in ev["last_error"]
    assert "last trade 1 min 3" in ev["last_error"]  # 1 min 35 s, give or take the test's own seconds
    page = viewer_client.get("/").content.decode()
    assert '<span class="feed-state">down</span>' in page  # the feed card
    assert 'id="feed-state" class="feed-state bad">down</span>' in page  # the header, red
    assert FeedStatus.objects.get(instrument_id=inst).state == "connected"  # display only: nothing stored


@pytest.mark.django_db
def test_feed_with_heartbeat_or_just_written_stays_as_stored(viewer_client, desk):
    inst = desk["instrument"].pk
    _set_feed(inst, state="connected", source="live", last_trade_s_ago=95, updated_s_ago=95)
    cache.set(_lock_key(inst), "runner-token", LOCK_TTL)  # a runner holds the lock
    ev = _feed_event(viewer_client, inst)
    assert (ev["state"], ev["heartbeat_lapsed"], ev["silent_s"], ev["last_error"]) == ("connected", False, None, "")

    cache.delete(_lock_key(inst))
    # Written a moment ago, no lock yet: the supervisor has just been asked to start it (make run's first seconds).
    _set_feed(inst, state="starting", source="sim", last_trade_s_ago=0, updated_s_ago=2)
    assert _feed_event(viewer_client, inst)["state"] == "starting"
    # Stopped and error feeds have no runner to miss.
    for state in ("stopped", "error"):
        _set_feed(inst, state=state, source="sim", last_trade_s_ago=300, updated_s_ago=300)
        assert _feed_event(viewer_client, inst)["state"] == state


@pytest.mark.django_db
def test_redis_unreachable_shows_running_feeds_down(viewer_client, desk):
    inst = desk["instrument"].pk
    _set_feed(inst, state="connected", source="live", last_trade_s_ago=20, updated_s_ago=1)
    dead = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                        "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}  # nothing listens there
    with override_settings(CACHES=dead):
        ev = _feed_event(viewer_client, inst)
    assert ev["state"] == "down" and ev["heartbeat_lapsed"] is True
    assert "Redis unreachable" in ev["last_error"] and "last trade 2" in ev["last_error"]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_killed_feed_worker_shows_down_within_the_lock_ttl(viewer_client, desk):
    """No supervisor here (no beat): the feed's worker is SIGKILLed and nothing restarts it."""
    from apps.ghosts.models import Ghost

    Ghost.objects.update(enabled=False, status="disabled")  # only the feed: the two cores are shared
    inst = desk["instrument"].pk
    worker = worker_start("liveness", queues="feeds,ghosts,default", concurrency=2)
    try:
        others = foreign_workers({worker.worker_name})
        assert not others, f"other Celery workers share this broker and would take the feed: {others}"
        run_feed.delay(inst)
        deadline = time.monotonic() + 90
        while Candle.objects.filter(instrument_id=inst).count() < 250 or _feed_event(viewer_client, inst)[
                "state"] != "connected":
            assert time.monotonic() < deadline, "the sim feed did not start"
            time.sleep(0.5)
        proc_kill(worker)
        killed_at = time.monotonic()
        assert FeedStatus.objects.get(instrument_id=inst).state == "connected"  # what the database still says
        while (ev := _feed_event(viewer_client, inst))["state"] != "down":
            assert time.monotonic() - killed_at < LOCK_TTL + 10, f"still {ev['state']!r}"
            time.sleep(0.5)
        down_s = time.monotonic() - killed_at
        print(f"\nfeed shown down {down_s:.1f} s after its worker was killed (lock TTL {LOCK_TTL} s): "
              f"{ev['last_error']!r}")
        assert ev["heartbeat_lapsed"] and ev["silent_s"] >= LOCK_TTL - 2
        assert "no heartbeat from its runner" in ev["last_error"]
    finally:
        proc_kill(worker)
