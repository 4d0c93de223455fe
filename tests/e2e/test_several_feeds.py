"""Several feeds at once (issue 3), with real processes: one prefork Celery worker of the test's own (-c 5 on
feeds, ghosts and default: two long feed tasks, the supervisor's duplicate run_feed calls and the ghost
evaluations all fit), Redis, and two instruments started the way beat starts them, through supervise_feeds:

- binance BTC/USDT (spot) replays the REAL Binance Vision spot 1m file of 2020-01-01 (spot data for the spot
  instrument) at 1200x, its spike fader evaluated bar by bar inside the replay;
- binanceusdm BTC/USDT:USDT runs the simulator (60x, after its warm-up backfill), its spike fader evaluated
  on the `ghosts` queue.

supervise_feeds is called twice in a row before either runner holds its lock, so each instrument gets two
run_feed messages: the lock must turn the second into "already running". While both run, a third call must
start nothing. All along (sampled about once a second) each instrument has exactly one runner in
`celery inspect active` and its lock keeps one token; both feeds store bars in both halves of the window.
At the end each bar set is contiguous with no duplicate, the replay's bars are the file's bars, and each
FeedStatus is connected with its own source and its own price.

Bars per feed and the wall time are printed. Run:
`RUN_DIR=/tmp/run-x .venv/bin/pytest tests/e2e/test_several_feeds.py -q -s`
"""

import ast
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.core.cache import cache

from apps.ghosts.services import ghost_create
from apps.market.importers import read_klines
from apps.market.models import Candle, Exchange, FeedStatus, Instrument
from apps.runtime.tasks import supervise_feeds
from hftweb.celery import app
from tests.datafiles import require
from tests.e2e.procs import foreign_workers, proc_kill, wait_until, worker_start

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]
SPOT_DAY = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip"
REPLAY_SPEED = 1200  # data seconds per wall second: 20 bars/s, so the 1440-bar day outlasts the window (72 s)
WATCH_S = 16  # wall seconds both feeds are watched side by side
RUN_FEED = "apps.market.tasks.run_feed"


@pytest.fixture
def worker(desk, redis_url):
    """The test's own worker, alone on the broker. MARKET_DATA_DIR points at the kline folder so the replay
    source names just the file: FeedStatus.source is a 64-character field."""
    proc = worker_start("several", queues="feeds,ghosts,default", concurrency=5,
                        env={"MARKET_DATA_DIR": str(require(SPOT_DAY).parent)})
    try:
        others = foreign_workers({proc.worker_name})
        assert not others, f"other Celery workers share this broker and would take the feeds: {others}"
        yield proc
    finally:
        proc_kill(proc)


def _runners(worker_name: str) -> dict[int, list[int]]:
    """instrument id -> pool pids of the active run_feed tasks. Called once every duplicate has returned, so
    each one is a runner."""
    active = app.control.inspect(destination=[worker_name], timeout=2.0).active()
    assert active, f"{worker_name} did not answer `inspect active`"
    out: dict[int, list[int]] = {}
    for tasks in active.values():
        for t in tasks:
            args = t["args"] if not isinstance(t["args"], str) else ast.literal_eval(t["args"])
            if t["name"] == RUN_FEED:
                out.setdefault(args[0], []).append(t["worker_pid"])
    return out


def _results(redis_url: str) -> list:
    """Every finished task's return value in the result backend (supervise_feeds keeps no task ids): run_feed
    returns a string, evaluate_bar a list of signal ids."""
    r = redis.Redis.from_url(redis_url)
    return [json.loads(r.get(key)).get("result") for key in r.scan_iter("celery-task-meta-*")]


def _run_feed_results(redis_url: str) -> list[str]:
    return [x for x in _results(redis_url) if isinstance(x, str)]



def _wait(cond, timeout: float, what: str, step: float = 0.3):
    return wait_until(cond, timeout, what, step)


def _count(instrument_id: int) -> int:
    return Candle.objects.filter(instrument_id=instrument_id).count()


def _assert_contiguous(instrument_id: int) -> list[datetime]:
    times = list(Candle.objects.filter(instrument_id=instrument_id).order_by("open_time")
                 .values_list("open_time", flat=True))
    assert len(times) == len(set(times)), "a minute stored twice"
    holes = [(a, b) for a, b in zip(times, times[1:], strict=False) if b - a != timedelta(minutes=1)]
    assert not holes, f"bars missing between {holes[:3]}"
    return times


def test_two_feeds_run_at_once_one_runner_each(desk, worker, redis_url):
    started = time.monotonic()
    spot = desk["instrument"]
    replay_source = f"replay:{require(SPOT_DAY).name}@{REPLAY_SPEED}"
    FeedStatus.objects.filter(instrument=spot).update(source=replay_source)
    usdm = Exchange.objects.create(code="binanceusdm", name="Binance USDT-M")
    perp = Instrument.objects.create(exchange=usdm, symbol="BTC/USDT:USDT", base="BTC", quote="USDT")
    FeedStatus.objects.create(instrument=perp, source="sim")
    ghost_create(name="fader-perp", kind="spike_fader", instrument=perp, enabled=True)
    ids = {spot.pk: "replay", perp.pk: "sim"}

    # Beat's task, twice in a row: neither runner holds its lock yet, so both calls queue both feeds.
    first, second = supervise_feeds(), supervise_feeds()
    assert sorted(first) == sorted(ids)
    duplicates = len(first) + len(second) - len(ids)

    def both_connected() -> bool:
        states = dict(FeedStatus.objects.values_list("instrument_id", "state"))
        return all(states[i] == FeedStatus.State.CONNECTED for i in ids) and all(_count(i) for i in ids)

    _wait(both_connected, 45, "both feeds connected with bars")
    connected_s = time.monotonic() - started
    # Each duplicate found the lock taken and returned at once, without touching the feed.
    _wait(lambda: _run_feed_results(redis_url).count("already running") >= duplicates, 10,
          f"{duplicates} duplicate run_feed calls to return 'already running'")
    assert _run_feed_results(redis_url) == ["already running"] * duplicates

    tokens = {i: cache.get(f"feed-lock:{i}") for i in ids}
    assert all(tokens.values()), tokens
    assert supervise_feeds() == [], "the supervisor started a feed that was running"

    samples: list[tuple[float, dict[int, int], dict[int, list[int]]]] = []
    watch_start = time.monotonic()
    while time.monotonic() - watch_start < WATCH_S:
        runners = _runners(worker.worker_name)
        samples.append((time.monotonic() - watch_start, {i: _count(i) for i in ids}, runners))
        for i in ids:
            assert cache.get(f"feed-lock:{i}") == tokens[i], f"the lock of {ids[i]} changed hands"
        time.sleep(0.5)
    assert supervise_feeds() == [], "the supervisor started a feed that was running"
    assert _run_feed_results(redis_url) == ["already running"] * duplicates  # and nothing else ran or ended

    for _, _, runners in samples:
        assert {i: len(runners.get(i, [])) for i in ids} == {i: 1 for i in ids}, runners
    pids = {i: {s[2][i][0] for s in samples} for i in ids}
    assert all(len(p) == 1 for p in pids.values()), f"a feed moved between pool processes: {pids}"
    assert pids[spot.pk] != pids[perp.pk]  # two long tasks side by side, not one after the other
    # Concurrently: both feeds stored bars in each half of the window.
    half = WATCH_S / 2
    for i, name in ids.items():
        early = [s[1][i] for s in samples if s[0] <= half]
        late = [s[1][i] for s in samples if s[0] > half]
        assert early[-1] > early[0] and late[-1] > late[0], f"{name} stored no bars in one half: {early} {late}"

    for i, source in ((spot.pk, replay_source), (perp.pk, "sim")):
        fs = FeedStatus.objects.get(instrument_id=i)
        assert (fs.state, fs.source, fs.last_error) == (FeedStatus.State.CONNECTED, source, "")
        closes = [float(c) for c in Candle.objects.filter(instrument_id=i).values_list("close", flat=True)]
        # its own price: within 1 % of its own bars' closes (the sim and 2020 BTC are ~10x apart)
        assert min(closes) * 0.99 <= float(fs.last_price) <= max(closes) * 1.01, (ids[i], fs.last_price)

    # Stop both (a stop request is the lock deleted), then look at what was stored.
    for i in ids:
        cache.delete(f"feed-lock:{i}")
    _wait(lambda: set(FeedStatus.objects.filter(instrument_id__in=ids).values_list("state", flat=True))
          == {FeedStatus.State.STOPPED}, 15, "both feeds to stop")
    assert sorted(_run_feed_results(redis_url)) == sorted(["already running"] * duplicates + ["stopped"] * 2)

    spot_times = _assert_contiguous(spot.pk)
    perp_times = _assert_contiguous(perp.pk)
    day = read_klines(require(SPOT_DAY)).set_index("open_time")
    assert spot_times[0] == datetime(2020, 1, 1, tzinfo=UTC) == day.index[0]
    stored = Candle.objects.filter(instrument=spot).order_by("open_time").values_list("open_time", "close", "volume")
    for t, close, vol in stored:  # the replay's bars are the file's, untouched by the other feed
        assert float(close) == pytest.approx(day.at[t, "close"], rel=1e-12)
        assert float(vol) == pytest.approx(day.at[t, "volume"], rel=1e-9)
    assert perp_times[-1] > datetime.now(UTC) - timedelta(minutes=5)  # the sim runs in wall time
    live_perp = samples[-1][1][perp.pk] - samples[0][1][perp.pk]

    # The sim's ghost evaluations ran on the `ghosts` queue beside the two feeds (one per live bar).
    def evaluations() -> int:
        n = sum(isinstance(x, list) for x in _results(redis_url))
        return n if n >= live_perp else 0

    n_evaluations = _wait(evaluations, 10, "the sim's bar evaluations")
    elapsed = time.monotonic() - started
    print(f"\nseveral feeds: replay {len(spot_times)} bars (real spot 2020-01-01 @{REPLAY_SPEED}),"
          f" sim {len(perp_times)} bars ({live_perp} live in the {WATCH_S} s window, the rest its warm-up"
          f" backfill); both connected after"
          f" {connected_s:.1f} s; {len(samples)} samples, one runner each; supervise_feeds queued {duplicates}"
          f" duplicate(s), all 'already running'; {n_evaluations} queued ghost evaluations; {elapsed:.1f} s in all")
