"""Feed task behaviour that needs no worker: the one-runner lock, errors shown as feed status, the supervisor."""

import pytest
from django.core.cache import cache

from apps.market.models import Candle, FeedStatus
from apps.runtime.tasks import run_feed, supervise_feeds

pytestmark = pytest.mark.django_db


def test_unknown_feed_source_is_a_visible_error_not_a_crash(desk):
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(source="carrier-pigeon")
    result = run_feed(desk["instrument"].pk, max_seconds=1)
    fs = FeedStatus.objects.get(instrument=desk["instrument"])
    assert result.startswith("error")
    assert fs.state == FeedStatus.State.ERROR
    assert "unknown feed source 'carrier-pigeon'" in fs.last_error
    assert cache.get(f"feed-lock:{desk['instrument'].pk}") is None  # the lock is released


def test_second_runner_for_the_same_instrument_refuses(desk):
    cache.set(f"feed-lock:{desk['instrument'].pk}", "someone-else", 15)
    assert run_feed(desk["instrument"].pk, max_seconds=1) == "already running"
    assert not Candle.objects.exists()


def test_sim_feed_runs_in_process_and_stores_bars_then_stops(desk):
    # 2 s of wall time at 600x: 4 h of backfill plus ~20 live minutes, then a clean stop.
    assert run_feed(desk["instrument"].pk, max_seconds=2, speed=600) == "stopped"
    fs = FeedStatus.objects.get(instrument=desk["instrument"])
    assert fs.state == FeedStatus.State.STOPPED and fs.last_price is not None
    times = list(Candle.objects.filter(instrument=desk["instrument"]).values_list("open_time", flat=True))
    assert len(times) >= 240
    assert times == sorted(times) and len(set(times)) == len(times)


def test_a_start_queued_before_a_stop_does_not_undo_it(desk):
    """run_feed messages sent before an operator's Stop (or before a delete) arrive after it: they must not start
    the feed again, nor write STARTING over STOPPED, nor keep the lock."""
    from apps.market.feed_services import feed_stop

    inst = desk["instrument"]
    feed_stop(instrument_id=inst.pk, actor=None)
    assert run_feed(inst.pk, max_seconds=2, speed=600) == "not wanted: the feed is stopped"
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.state == FeedStatus.State.STOPPED and not Candle.objects.filter(instrument=inst).exists()
    assert cache.get(f"feed-lock:{inst.pk}") is None
    assert run_feed(inst.pk + 1000) == "no such instrument"
    assert cache.get(f"feed-lock:{inst.pk + 1000}") is None


def test_a_second_sim_instrument_starts_on_the_sims_shared_clock(desk):
    """At HFT_SIM_SPEED=120 a sim started later than another would run hours of data behind it (the QA walk: ETH
    20.5 data hours behind BTC), and its fills would land on past trading days. It starts at their data time."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.market.models import Instrument

    ahead = (timezone.now() + timedelta(hours=20)).replace(second=0, microsecond=0)
    other = Instrument.objects.create(exchange=desk["exchange"], symbol="ETH/USDT", base="ETH", quote="USDT")
    FeedStatus.objects.create(instrument=other, source="sim", state=FeedStatus.State.CONNECTED, last_price=3400,
                              last_trade_at=ahead)
    assert run_feed(desk["instrument"].pk, max_seconds=1, speed=60) == "stopped"
    newest = Candle.objects.filter(instrument=desk["instrument"]).latest("open_time").open_time
    assert ahead - timedelta(minutes=2) <= newest <= ahead + timedelta(minutes=5), (newest, ahead)


def test_supervisor_starts_only_feeds_without_a_live_runner(desk, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    cache.set(f"feed-lock:{desk['instrument'].pk}", "alive", 15)
    assert supervise_feeds() == []
    cache.delete(f"feed-lock:{desk['instrument'].pk}")
    from hftweb.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("feeds")
    assert supervise_feeds() == [desk["instrument"].pk]


def test_sanitiser_rejections_skip_the_builder_and_are_published(desk):
    import math

    from apps.market.bar_builder import Trade
    from apps.runtime.pipeline import FeedPipeline

    feed = FeedPipeline(desk["instrument"], on_bar=None, has_liquidations=True)
    t0 = 1_735_689_600_000
    trades = [
        Trade(ts_ms=t0, price=100.0, amount=1.0, side="buy", id="1"),
        Trade(ts_ms=t0 + 1, price=math.nan, amount=1.0, side="buy", id="2"),
        Trade(ts_ms=t0 + 2, price=100.0, amount=1.0, side="buy", id="1"),
        Trade(ts_ms=t0 + 3, price=200.0, amount=1.0, side="sell", id="3"),
    ]
    feed.consume(trades, [], evaluate=False, now_ms=t0 + 60_000)
    assert feed.builder.snapshot()["trades"] == 1 and feed.last_price == 100.0
    assert feed.builder.rejected == {} and feed.builder.duplicates == 0
    assert feed.counts() == {"non_finite": 1, "duplicate_id": 1, "price_band": 1}


def test_a_fresh_sim_desk_backfills_what_the_trend_gate_needs(desk):
    """With a trend filter on the instrument the gate needs ~8.5 days of bars: the sim writes them in bulk
    at its first start, so the desk can trade at once (the trend state is ready on the last bar)."""
    from apps.engine.bars import bars_from_records
    from apps.engine.trend import TrendConfig, trend_state
    from apps.ghosts.selectors import warmup_minutes_needed
    from apps.ghosts.services import ghost_create
    from apps.market.selectors import candle_window, candles_as_bar_records

    ghost_create(name="trend-btc", kind="trend_filter", instrument=desk["instrument"], enabled=False)
    need = warmup_minutes_needed(instrument_id=desk["instrument"].pk)
    assert need == TrendConfig().warmup_minutes
    assert run_feed(desk["instrument"].pk, max_seconds=0.5, speed=60) == "stopped"
    last = Candle.objects.filter(instrument=desk["instrument"]).latest("open_time")
    candles = candle_window(instrument_id=desk["instrument"].pk, until=last.open_time, minutes=need + 1)
    assert len(candles) >= need
    state = trend_state(bars_from_records(candles_as_bar_records(candles)))
    assert bool(state["ready"].iloc[-1])
