"""A feed going down is pushed to open pages, and so is its coming back (issue 12, faults: leftovers).

Rows read for display say "down" once the runner's lock lapsed (tests/market/test_feed_liveness.py), but an open page
only learnt it on reload: the runner that would have pushed is what died. Beat's feed_watch_task (every 5 s) now
pushes the change both ways, once per change; "down" is drawn red (bad) like error and stopped.

Real Redis (channel layer and cache), the real beat schedule and a real Celery worker; the last test is a real
Chromium on a page served by Daphne.
"""

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from apps.dashboard.templatetags.desk import feed_class
from apps.market.events import FEEDS_GROUP
from apps.market.feed_watch import WATCH_EVERY_S, feed_watch, feed_watch_task
from apps.market.models import FeedStatus
from apps.market.tasks import LOCK_TTL, _lock_key
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, desk_events


def _runner_gone(instrument_id: int, *, silent_s: float = 95) -> None:
    """A connected feed whose runner stopped beating `silent_s` ago: no lock, last report that long ago."""
    cache.delete(_lock_key(instrument_id))
    now = timezone.now()
    FeedStatus.objects.filter(instrument_id=instrument_id).update(
        state="connected", source="sim", last_price=101_000, last_trade_at=now - timedelta(seconds=silent_s),
        updated_at=now - timedelta(seconds=silent_s), last_error="")


def _runner_back(instrument_id: int) -> None:
    cache.set(_lock_key(instrument_id), "runner-token", LOCK_TTL)


async def _listen() -> tuple:
    """A channel in the feeds group, as a page's socket is. One event loop per test: channels_redis binds a
    channel's receive queue to the loop of its first receive."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(FEEDS_GROUP, channel)
    return layer, channel


async def _received(layer, channel: str, wait_s: float = 0.5) -> list[dict]:
    """Every event queued for `channel` (none left after `wait_s` of silence)."""
    out = []
    while True:
        try:
            out += desk_events(await asyncio.wait_for(layer.receive(channel), wait_s))
        except TimeoutError:
            return out


def test_down_is_red_in_the_template_filter():
    assert feed_class("down") == feed_class("error") == feed_class("stopped") == "bad"
    assert feed_class("connected") == "ok"
    assert feed_class("reconnecting") == feed_class("lagging") == feed_class("starting") == "warn"


def test_feed_watch_runs_on_beat_every_few_seconds():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == feed_watch_task.name)
    assert entry["schedule"] <= 5 and entry["options"]["expires"] < entry["schedule"]


@pytest.mark.django_db(transaction=True)
async def test_down_is_pushed_once_and_back_up_is_pushed(desk):
    inst = desk["instrument"].pk
    watch, gone, back = sync_to_async(feed_watch), sync_to_async(_runner_gone), sync_to_async(_runner_back)
    layer, channel = await _listen()
    await back(inst)
    await FeedStatus.objects.filter(instrument_id=inst).aupdate(state="connected", source="sim")
    assert await watch() == {"down": [], "up": []}  # alive: nothing to say (the runner pushes its own status)
    assert await _received(layer, channel) == []

    await gone(inst)
    assert await watch() == {"down": [inst], "up": []}
    (ev,) = await _received(layer, channel)
    assert (ev["type"], ev["instrument_id"], ev["state"], ev["heartbeat_lapsed"]) == ("feed.status", inst, "down", True)
    assert 94 <= ev["silent_s"] <= 100 and "no heartbeat from its runner" in ev["last_error"]

    # still down: not pushed again on every tick
    assert await watch() == {"down": [], "up": []}
    assert await _received(layer, channel) == []

    await back(inst)  # the supervisor restarted it: its lock is held again
    assert await watch() == {"down": [], "up": [inst]}
    (ev,) = await _received(layer, channel)
    assert (ev["state"], ev["heartbeat_lapsed"], ev["last_error"]) == ("connected", False, "")
    assert await watch() == {"down": [], "up": []}

    # down again, then stopped by an operator: no runner to miss, so it is "back" (as stopped, red for its own reason)
    await gone(inst)
    assert (await watch())["down"] == [inst]
    await FeedStatus.objects.filter(instrument_id=inst).aupdate(state="stopped")
    assert (await watch())["up"] == [inst]
    assert [e["state"] for e in await _received(layer, channel)] == ["down", "stopped"]
    assert (await FeedStatus.objects.aget(instrument_id=inst)).state == "stopped"  # display marks are never saved


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_a_real_worker_runs_the_beat_task(desk, lone_broker):
    """The task lives outside tasks.py (autodiscovery does not find it): the worker must still know it."""
    from tests.e2e.procs import proc_kill, worker_start

    inst = desk["instrument"].pk
    layer, channel = await _listen()
    worker = await sync_to_async(worker_start)("watch-task", queues="default", concurrency=1)
    try:
        await sync_to_async(_runner_gone)(inst)
        await sync_to_async(feed_watch_task.apply_async)(queue="default")
        deadline = time.monotonic() + 30
        events: list[dict] = []
        while not events:
            assert time.monotonic() < deadline, "the worker did not push the feed down"
            events = await _received(layer, channel, wait_s=1)
    finally:
        await sync_to_async(proc_kill)(worker)
    assert [(e["instrument_id"], e["state"]) for e in events] == [(inst, "down")]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
async def test_beat_pushes_down_when_the_feeds_worker_is_killed(desk, lone_broker, tmp_path):
    """Real processes end to end: worker A runs the sim feed, worker B takes the default queue, beat runs the desk's
    schedule. A is SIGKILLed; a socket's channel in the feeds group hears "down" from beat's feed watch (on B)
    within the lock's TTL and a watch tick, nothing pushed by hand."""
    from apps.ghosts.models import Ghost
    from apps.runtime.tasks import run_feed
    from tests.e2e.procs import beat_start, proc_kill, worker_log, worker_start

    inst = desk["instrument"].pk
    await Ghost.objects.aupdate(enabled=False, status="disabled")  # only the feed: the two cores are shared
    layer, channel = await _listen()
    feeds = await sync_to_async(worker_start)("watch-feeds", queues="feeds,ghosts", concurrency=2)
    other = await sync_to_async(worker_start)("watch-default", queues="default", concurrency=1)
    beat = await sync_to_async(beat_start)(tmp_path)
    try:
        await sync_to_async(run_feed.delay)(inst)
        deadline = time.monotonic() + 90
        while (await FeedStatus.objects.aget(instrument_id=inst)).state != "connected":
            assert time.monotonic() < deadline, f"the sim feed did not start\n{worker_log(feeds)[-2000:]}"
            await asyncio.sleep(0.5)
        await _received(layer, channel, wait_s=0.2)  # what the running feed pushed so far
        await sync_to_async(proc_kill)(feeds)
        killed_at = time.monotonic()
        bound = LOCK_TTL + WATCH_EVERY_S + 15  # TTL, a watch tick, and slack for two busy cores
        down = []
        while not down:
            assert time.monotonic() - killed_at < bound, f"no down push {bound:.0f} s after the kill\n" \
                f"{worker_log(other)[-2000:]}"
            down = [e for e in await _received(layer, channel, wait_s=1) if e["state"] == "down"]
        print(f"\nfeed pushed down {time.monotonic() - killed_at:.1f} s after its worker was SIGKILLed "
              f"(lock TTL {LOCK_TTL} s, watch every {WATCH_EVERY_S:.0f} s; load {os.getloadavg()[0]:.1f})")
        assert down[0]["instrument_id"] == inst and down[0]["heartbeat_lapsed"] is True
    finally:
        for p in (beat, other, feeds):
            await sync_to_async(proc_kill)(p)


playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
async def test_an_open_page_shows_the_feed_down_in_red_and_back_without_reload(daphne_url, desk, make_user):
    from tests.browser.test_desk_browser import collect_js_errors, login

    async_playwright, expect = playwright_api.async_playwright, playwright_api.expect
    inst = desk["instrument"].pk
    await sync_to_async(make_user)("vera", "viewer")
    await sync_to_async(_runner_back)(inst)
    await FeedStatus.objects.filter(instrument_id=inst).aupdate(state="connected", source="sim", last_price=101_000)
    card, header = f'[data-feed-id="{inst}"]', "#feed-state"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/")
            await expect(page.locator(header)).to_have_text("connected")
            await expect(page.locator(f"{card} .feed-state")).to_have_text("connected")

            await sync_to_async(_runner_gone)(inst)
            assert (await sync_to_async(feed_watch)())["down"] == [inst]
            await expect(page.locator(header)).to_have_text("down", timeout=5_000)
            await expect(page.locator(header)).to_have_class("feed-state bad")
            await expect(page.locator(f"{card} .feed-state")).to_have_text("down")
            await expect(page.locator(card)).to_have_class("card feed-card bad")
            await expect(page.locator(f"{card} .feed-error")).to_contain_text("no heartbeat from its runner")

            await sync_to_async(_runner_back)(inst)
            assert (await sync_to_async(feed_watch)())["up"] == [inst]
            await expect(page.locator(header)).to_have_text("connected", timeout=5_000)
            await expect(page.locator(header)).to_have_class("feed-state ok")
            await expect(page.locator(card)).to_have_class("card feed-card ok")
            await expect(page.locator(f"{card} .feed-error")).to_be_hidden()
            assert not errors, errors
        finally:
            await browser.close()
