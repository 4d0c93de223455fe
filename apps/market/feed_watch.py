"""Feed liveness pushed to open pages (issue 12, faults).

A page reads a feed's liveness when it renders (apps.market.selectors.feed_statuses marks a feed whose runner's lock
lapsed as "down"), but nothing pushed the change: the runner that would have pushed is the thing that died, so an
open page kept saying "connected" until a reload. Beat runs `feed_watch_task` every few seconds: it reads the feeds
as a page would and pushes a `feed.status` event when a feed goes down, and again when it comes back (to whatever
state it is in then), so an open page follows without a reload.

What was last pushed is remembered in the cache (one key per feed, only while it is shown down), so a dead feed is
pushed once, not every tick. Redis down: nothing can be pushed or remembered (the channel layer and the cache are
that Redis), and the pages' own sockets are down too; the next tick after Redis returns pushes what is due.
"""

import logging

from celery import shared_task
from django.core.cache import cache

from apps.common.realtime import send_now
from apps.market.events import FEEDS_GROUP, feed_payload
from apps.market.selectors import FEED_DOWN, feed_statuses

log = logging.getLogger(__name__)
WATCH_EVERY_S = 5.0  # beat's interval (settings.CELERY_BEAT_SCHEDULE): a lapsed lock shows within TTL + this
SHOWN_DOWN_TTL_S = 7 * 24 * 3600  # forgotten at last; the next tick pushes the feed down again (harmless)


def _shown_key(instrument_id: int) -> str:
    return f"feed-watch:down:{instrument_id}"


def feed_watch() -> dict[str, list[int]]:
    """Push `feed.status` for every feed that went down or came back since the last call; returns the instrument
    ids pushed, {"down": [...], "up": [...]}."""
    pushed: dict[str, list[int]] = {"down": [], "up": []}
    rows = list(feed_statuses())  # liveness marked: state "down" when the runner's lock lapsed
    if not rows:
        return pushed
    try:
        shown = cache.get_many([_shown_key(fs.instrument_id) for fs in rows])
    except Exception as exc:  # Redis unreachable: no push can reach a page either; the next tick does it
        log.warning("feed watch skipped, Redis unreachable: %s", exc)
        return pushed
    for fs in rows:
        key = _shown_key(fs.instrument_id)
        down = fs.state == FEED_DOWN
        if down == (key in shown):
            continue
        send_now(FEEDS_GROUP, feed_payload(fs))
        if down:
            cache.set(key, 1, SHOWN_DOWN_TTL_S)
            pushed["down"].append(fs.instrument_id)
        else:
            cache.delete(key)
            pushed["up"].append(fs.instrument_id)
    if pushed["down"] or pushed["up"]:
        log.info("feed watch pushed %s", pushed)
    return pushed


@shared_task(ignore_result=True)
def feed_watch_task() -> dict[str, list[int]]:
    return feed_watch()
