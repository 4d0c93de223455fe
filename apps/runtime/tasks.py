"""The runtime's tasks: the feed runner (queue `feeds`), its supervisor (beat) and the bar evaluation (queue
`ghosts`). Exactly one runner per instrument across all workers: a Redis lock with a heartbeat; beat's
supervisor restarts a feed whose lock has expired (its worker died).

The tasks keep the names they had before the runtime had an app of its own (`apps.market.tasks.run_feed`,
`apps.market.tasks.supervise_feeds`, `apps.ghosts.tasks.evaluate_bar`): beat's DatabaseScheduler rows, the
queue routes in settings and messages already queued by a running desk name them.
"""

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import shared_task
from django.core.cache import cache

from apps.market.models import FeedStatus, Instrument
from apps.market.services import feed_status_update
from apps.market.tasks import LOCK_TTL, _lock_key
from apps.runtime.evaluation import BarDecider, bar_evaluate
from apps.runtime.pipeline import pipeline_factory

log = logging.getLogger(__name__)


def feed_source_runner(source: str, instrument: Instrument, *, on_bar: Callable | None = None,
                       decider: BarDecider | None = None, **kwargs: Any) -> Any:
    """The runner for a FeedStatus.source: "sim", "live" (ccxt) or "replay:<path>[@speed]".

    Every feed adapter (apps.market.*_feed) takes (instrument, make_pipeline=, heartbeat=, max_seconds=, ...)
    and feeds the same FeedPipeline, built here with `on_bar`; only where the trades come from differs.
    """
    make_pipeline = pipeline_factory(instrument, on_bar=on_bar, decider=decider)
    if source == "sim":
        from apps.ghosts.selectors import warmup_minutes_needed
        from apps.market.sim_feed import SimFeed

        kwargs.setdefault("warmup_minutes", warmup_minutes_needed(instrument_id=instrument.pk))
        return SimFeed(instrument, make_pipeline=make_pipeline, **kwargs)
    if source == "live":
        from apps.market.live_feed import LiveFeed

        kwargs.pop("speed", None)
        return LiveFeed(instrument, make_pipeline=make_pipeline, **kwargs)
    if source.startswith("replay:"):
        from apps.market.replay_feed import ReplayFeed

        return ReplayFeed(instrument, source=source, make_pipeline=make_pipeline, **kwargs)
    raise ValueError(f"unknown feed source {source!r}; use sim, live or replay:<path>[@speed]")
# A feed runs for as long as the desk does. None here would mean "the worker's default" (Celery falls back to
# task_time_limit, 300/330 s in settings), which killed every runner after 5 minutes (the supervisor restarted
# it, with tracebacks in the log); 0 is read the same way. So: ten years.
FEED_TIME_LIMIT_S = 10 * 365 * 24 * 3600


@shared_task(name="apps.market.tasks.run_feed", acks_late=False, soft_time_limit=FEED_TIME_LIMIT_S,
             time_limit=FEED_TIME_LIMIT_S + 60)
def run_feed(instrument_id: int, max_seconds: float | None = None, speed: float | None = None) -> str:
    token = uuid.uuid4().hex
    key = _lock_key(instrument_id)
    if not cache.add(key, token, LOCK_TTL):
        return "already running"
    instrument = Instrument.objects.select_related("exchange", "feed_status").filter(pk=instrument_id).first()
    # A start queued before an operator's Stop (the page's own, or beat's supervisor's sent just before it), or
    # before the instrument was deleted: the feed is not wanted any more, and running it would undo the stop.
    # Checked under the lock: a Stop after this point deletes the lock, which the runner's heartbeat obeys.
    if instrument is None or instrument.feed_status.state == FeedStatus.State.STOPPED:
        if cache.get(key) == token:
            cache.delete(key)
        return "no such instrument" if instrument is None else "not wanted: the feed is stopped"
    held = {"at": time.monotonic(), "superseded": False}

    def heartbeat() -> bool:
        holder, now = cache.get(key), time.monotonic()
        if holder == token:
            cache.touch(key, LOCK_TTL)
            held["at"] = now
            return True
        if holder is None and now - held["at"] >= LOCK_TTL and cache.add(key, token, LOCK_TTL):
            # This runner stalled past the TTL (a long DB lock wait, a frozen process) and nobody took over:
            # carry on. A lock that vanished sooner was deleted on purpose: that is a stop request.
            log.warning("feed %s: lock expired during a %.0f s stall; re-acquired", instrument_id, now - held["at"])
            held["at"] = now
            return True
        # Someone else runs the feed now (stop rather than run twice), or we were asked to stop.
        held["superseded"] = holder is not None or now - held["at"] >= LOCK_TTL
        return False

    source = instrument.feed_status.source

    def on_bar(candle) -> None:
        if source.startswith("replay:"):
            # A replay runs faster than the ghosts could follow from a queue: each bar is decided (and
            # filled at the next price) before the next one is fed, so a replay takes the decisions live
            # would, in the same code, whatever its speed.
            evaluate_bar(candle.instrument_id, candle.open_time.isoformat())
        else:
            evaluate_bar.delay(candle.instrument_id, candle.open_time.isoformat())

    try:
        # A kline replay's bars are decided in chunks in-process (BarDecider); a trade replay's bars one by one
        # through on_bar, as they close.
        extra: dict = {}
        decider = None
        if source.startswith("replay:"):
            from apps.ghosts.selectors import warmup_minutes_needed
            from apps.runtime.services import replay_warmup

            decider = BarDecider(instrument_id)
            extra["warm_up"] = lambda first: replay_warmup(
                instrument=instrument, first=first, heartbeat=heartbeat,
                minutes=warmup_minutes_needed(instrument_id=instrument_id) + 30)
        runner = feed_source_runner(source, instrument, on_bar=on_bar, decider=decider, heartbeat=heartbeat,
                                    speed=speed, max_seconds=max_seconds, **extra)
        feed_status_update(instrument_id=instrument_id, state=FeedStatus.State.STARTING)
        if source == "live":
            from apps.ghosts.selectors import warmup_minutes_needed
            from apps.market.history_services import history_warmup

            history_warmup(instrument=instrument, minutes=warmup_minutes_needed(instrument_id=instrument_id) + 30)
        runner.run()
        if held["superseded"]:
            # The new runner owns the feed status now; writing STOPPED would also make the supervisor give
            # up on this feed for good.
            log.warning("feed %s: another runner took over; this one stops", instrument_id)
            return "superseded"
        feed_status_update(instrument_id=instrument_id, state=FeedStatus.State.STOPPED)
        return "stopped"
    except Exception as exc:  # shown on the dashboard; the supervisor retries on its next beat
        log.exception("feed %s (%s) failed", instrument_id, source)
        feed_status_update(
            instrument_id=instrument_id, state=FeedStatus.State.ERROR, last_error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        return f"error: {exc}"
    finally:
        if cache.get(key) == token:
            cache.delete(key)


@shared_task(name="apps.market.tasks.supervise_feeds", ignore_result=True)
def supervise_feeds() -> list[int]:
    """Start the feed of every configured instrument that has no live runner (lock expired or never held)."""
    started = []
    for fs in FeedStatus.objects.exclude(state=FeedStatus.State.STOPPED).only("instrument_id"):
        if cache.get(_lock_key(fs.instrument_id)) is None:
            run_feed.delay(fs.instrument_id)
            started.append(fs.instrument_id)
    return started


@shared_task(name="apps.ghosts.tasks.evaluate_bar", acks_late=True, reject_on_worker_lost=True, soft_time_limit=50,
             time_limit=60)
def evaluate_bar(instrument_id: int, bar_time_iso: str) -> list[int]:
    """Safe to run twice (signals are unique per ghost and bar; execution only from PENDING)."""
    signals = bar_evaluate(instrument_id=instrument_id, bar_time=datetime.fromisoformat(bar_time_iso))
    return [s.pk for s in signals]
