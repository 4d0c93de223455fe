"""The replay runner at full speed (issue 13): one runner per instrument, however fast it replays.

A `@max` replay of the 90-day kline file used to feed 20,000 bars between two renewals of its Redis lock; at a
few bars per second the lock lapsed, and beat's supervisor (which starts every feed whose lock has lapsed)
started a second and a third runner for the same instrument. The runner now renews the lock about once a second
(steps sized to the pipeline's pace, STEP_SECONDS). Here the lock's TTL is cut to 2 s and a step to 0.1 s (the
same 1:20 margin as 0.75 s steps against the real 15 s) while the desk's five ghosts replay the file at @max in
a thread; from the first stored bar on, the supervisor, called over and over, must find a live runner each time
(a fixed 20,000 bars per step fails this).
"""

import re
import threading
import time

import pytest
from django.db import connection

from apps.engine.registry import DESK_KINDS
from apps.ghosts.services import ghost_create
from apps.market import replay_feed
from apps.market.models import Candle, FeedStatus
from apps.runtime import tasks as runtime_tasks
from apps.runtime.tasks import run_feed, supervise_feeds
from tests.datafiles import BTC_90D, require

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_a_max_replay_renews_its_lock_so_the_supervisor_starts_no_second_runner(desk, monkeypatch, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a supervisor that did start one only queues it
    monkeypatch.setattr(runtime_tasks, "LOCK_TTL", 2)
    monkeypatch.setattr(replay_feed, "STEP_SECONDS", 0.1)
    inst = desk["instrument"]
    for kind in DESK_KINDS:
        if kind != "spike_fader":
            ghost_create(name=f"{kind}-btc", kind=kind, instrument=inst, enabled=True)
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{require(BTC_90D)}@max",
                                                      state=FeedStatus.State.STARTING)
    result: dict[str, str] = {}

    def runner() -> None:
        try:
            result["r"] = run_feed(inst.pk, max_seconds=12)
        finally:
            connection.close()

    thread = threading.Thread(target=runner)
    thread.start()
    try:
        deadline = time.monotonic() + 30  # the file is read before the first step (~2 s): not what is tested
        while not Candle.objects.filter(instrument=inst).exists() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        checks, started = 0, []
        while thread.is_alive():
            started += supervise_feeds()
            checks += 1
            time.sleep(0.1)
    finally:
        thread.join(60)
    assert result.get("r") == "stopped"
    assert checks >= 20, "the replay ended before the supervisor could look"
    assert started == [], f"the supervisor started a second runner after {checks} checks"
    assert Candle.objects.filter(instrument=inst).count() > 2_000, "a @max replay of many steps"


def test_the_overview_shows_the_replays_data_time_and_price_while_it_runs(desk, client, operator, monkeypatch):
    """A @max kline replay publishes its price and data time between steps; with 20,000 bars per step the first
    publish came minutes (at the old pace, hours) in, and the overview showed today's date and no price. The page
    is read 1.5 s after the first bar is stored, with steps of 0.25 s."""
    monkeypatch.setattr(replay_feed, "STEP_SECONDS", 0.25)
    inst = desk["instrument"]
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{require(BTC_90D)}@max",
                                                      state=FeedStatus.State.STARTING)
    done = threading.Event()

    def runner() -> None:
        try:
            run_feed(inst.pk, max_seconds=8)
        finally:
            done.set()
            connection.close()

    thread = threading.Thread(target=runner)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not Candle.objects.filter(instrument=inst).exists() and not done.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        assert not done.is_set(), "the replay must still be running when the page is read"
        client.force_login(operator)
        html = client.get("/").content.decode()
    finally:
        thread.join(60)
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.last_trade_at is not None and fs.last_trade_at.year == 2025  # data time, not the wall clock's
    header = re.search(r"data time ([0-9-]+)\)", html)
    assert header and header.group(1).startswith("2025-"), header
    price = re.search(r'feed-price">([^<]*)<', html)
    assert price and price.group(1).strip() not in ("", "—", "-"), price
