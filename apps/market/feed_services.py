"""Starting and stopping an instrument's feed from the Instruments page (issue 11). Apart from apps.market.services
because it needs the feed runner's lock key (apps.market.tasks) and the replay resolver, which import services.

The runner itself is the runtime's (apps.runtime.tasks.run_feed), asked by its task name: market never imports
the runtime."""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from apps.audit.services import audit_record
from apps.market.models import FeedStatus, Instrument
from apps.market.services import InstrumentError, feed_status_update
from apps.market.tasks import _lock_key

log = logging.getLogger(__name__)
RUN_FEED_TASK = "apps.market.tasks.run_feed"


def feed_source_check(source: str, *, instrument=None) -> str:
    """The feed source an operator may start from the browser: "sim", "live" or "replay:<file>[@speed]" where the
    file is a RELATIVE path found under the market-data folders (apps.market.replay_feed.data_roots): the page
    starts replays of the desk's data, it does not read files anywhere on the host."""
    from pathlib import PurePosixPath

    from apps.market.exchanges import LIVE_EXCHANGES
    from apps.market.replay_feed import ReplayError, parse_source, resolve_path

    source = (source or "").strip()
    if source == "sim":
        return source
    if source == "live":
        if instrument is not None and instrument.exchange.code not in LIVE_EXCHANGES:
            raise InstrumentError(f"no live feed for {instrument.exchange.code}: live feeds run on "
                                  f"{', '.join(LIVE_EXCHANGES)}")
        return source
    if not source.startswith("replay:"):
        raise InstrumentError("feed must be sim, live or replay:<file>[@speed]")
    if len(source) > 255 or "\x00" in source:
        raise InstrumentError("replay source too long (255 characters at most) or holds a NUL byte")
    try:
        spec = parse_source(source)
        for target in spec.targets:
            p = PurePosixPath(target.replace("\\", "/"))
            if target.startswith("db:") or p.is_absolute() or ".." in p.parts or target.startswith("~"):
                raise InstrumentError(f"replay file {target!r}: name a file relative to the market-data folder "
                                      "(e.g. klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip)")
            resolve_path(target)
    except ReplayError as exc:
        raise InstrumentError(str(exc)) from exc
    return source


@transaction.atomic
def feed_start(*, instrument_id: int, source: str, actor) -> FeedStatus:
    """Start an instrument's feed: the FeedStatus says which source and STARTING, the runtime's feed runner is
    asked at once after commit (and beat's supervisor starts it anyway within its period).

    A feed that runs (or is still stopping: its runner holds the lock for up to a second after the stop) is not
    switched here: the old runner writes STOPPED as it exits, which would overwrite the new start."""
    # The instrument's row lock orders a start after a delete in progress (apps.dashboard.instrument_delete locks
    # it too): the start then finds no instrument (404) instead of a feed row pointing at a deleted one.
    inst = Instrument.objects.select_for_update(of=("self",)).select_related("exchange").get(
        pk=instrument_id)  # DoesNotExist -> 404
    source = feed_source_check(source, instrument=inst)
    fs, _ = FeedStatus.objects.select_for_update().get_or_create(
        instrument=inst, defaults={"source": source, "state": FeedStatus.State.STOPPED})  # a new feed: started below
    before = {"source": fs.source, "state": fs.state}
    if fs.state != FeedStatus.State.STOPPED:
        if fs.source == source:
            return fs  # idempotent: a double click starts no second runner (the runner's lock would refuse it too)
        raise InstrumentError(f"the feed runs {fs.source}: stop it first, then start {source}")
    running = FeedStatus.objects.exclude(state=FeedStatus.State.STOPPED).exclude(instrument=inst).count()
    if running >= settings.HFT_MAX_FEEDS:
        raise InstrumentError(f"{running} feeds run already, the most this desk runs at once (HFT_MAX_FEEDS): each "
                              "holds a worker process for as long as it runs; stop one, or raise HFT_MAX_FEEDS "
                              "together with the worker processes on the feeds queue")
    if cache.get(_lock_key(inst.pk)) is not None:
        raise InstrumentError("the feed is still stopping (its runner has not let go yet): try again in a few seconds")
    fs = feed_status_update(instrument_id=inst.pk, source=source, state=FeedStatus.State.STARTING, last_error="")
    audit_record(actor=actor, action="feed.started", obj=inst, before=before, after={"source": source,
                                                                                      "state": fs.state})
    transaction.on_commit(lambda: _run_feed_send(inst.pk))
    return fs


def _run_feed_send(instrument_id: int) -> None:
    from hftweb.celery import app

    try:
        app.send_task(RUN_FEED_TASK, args=[instrument_id])
    except Exception:  # the broker is down: beat's supervisor starts it once it is back (the row says STARTING)
        log.warning("feed %s: run_feed not sent; the supervisor will start it", instrument_id, exc_info=True)


@transaction.atomic
def feed_stop(*, instrument_id: int, actor) -> FeedStatus:
    """Stop an instrument's feed: STOPPED (the supervisor leaves it alone) and, after commit, the runner's lock is
    deleted so the runner stops at its next heartbeat (about a second)."""
    fs = FeedStatus.objects.select_for_update().select_related("instrument").filter(instrument_id=instrument_id).first()
    if fs is None:
        raise InstrumentError("this instrument has no feed")
    if fs.state == FeedStatus.State.STOPPED:
        return fs
    before = {"source": fs.source, "state": fs.state}
    fs = feed_status_update(instrument_id=instrument_id, state=FeedStatus.State.STOPPED)
    audit_record(actor=actor, action="feed.stopped", obj=fs.instrument, before=before,
                 after={"source": fs.source, "state": fs.state})
    transaction.on_commit(lambda: cache.delete(_lock_key(instrument_id)))
    return fs
