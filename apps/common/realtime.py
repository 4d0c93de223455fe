"""One way to push an event to browsers: after the surrounding transaction commits (DESIGN §3).

Cost per push (issue 13: about 5 ms before anything left). `async_to_sync(layer.group_send)` from a plain thread
(a Celery task, a view) built a new event loop in a new thread for every call, and channels-redis keeps its Redis
connections per event loop, so every push also opened (and dropped) a Redis connection. Pushes now run on one
long-lived event loop per process (`_LayerLoop`, restarted after a fork: Celery's prefork children), so the
connections stay open and a push is the group send's Redis round trips.

The event is encoded to JSON once, here, not once per socket: the message carries the frame's text, and the
consumer sends it as is (apps.dashboard.consumers). It also carries the key under which a newer event replaces an
older one still waiting for a slow socket (`coalesce_key`: ticks and P&L, where only the newest state matters).

Events sent on commit are batched: the events one transaction queued for the same group go out as one
`desk.batch` message when it commits (a closed bar's signals, fills and trade together), not one group send each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any

from channels.layers import get_channel_layer
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
UNREACHABLE_WARN_EVERY_S = 60.0  # one line a minute while the channel layer is down, not a traceback per push
SEND_TIMEOUT_S = 20.0  # above the layer's socket_timeout (15 s): a hung Redis fails the push, never the caller
_last_unreachable_warning = [float("-inf")]


class _LayerLoop:
    """One event loop in a daemon thread, per process, that every synchronous push runs on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid() or self._loop is None or self._loop.is_closed():
                # First push in this process (or in a forked child, which inherits the object but not the thread).
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="realtime-push", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def run(self, coro: Coroutine, timeout: float = SEND_TIMEOUT_S) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop())
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise


_layer_loop = _LayerLoop()
# A child forked while another thread held the lock (a push in flight) would wait on it for ever: a fresh lock there.
os.register_at_fork(after_in_child=lambda: setattr(_layer_loop, "_lock", threading.Lock()))


def _warn_unreachable(group: str, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_unreachable_warning[0] >= UNREACHABLE_WARN_EVERY_S:
        _last_unreachable_warning[0] = now
        log.warning("push to %s failed: the channel layer is unreachable (%s); browsers miss live events "
                    "until it is back (said at most once a minute)", group, exc)


def layer_send_many(messages: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """channel_layer.group_send of each (group, message), all in one hop to the push loop; never raises into the
    caller: Redis down (a known state) is one warning line a minute, any other failure a logged traceback."""
    layer = get_channel_layer()
    messages = [(group, dict(message)) for group, message in messages]
    if layer is None or not messages:
        return

    async def send_all() -> list:
        return await asyncio.gather(*(layer.group_send(g, m) for g, m in messages), return_exceptions=True)

    groups = ", ".join(sorted({g for g, _ in messages}))
    try:
        results = _layer_loop.run(send_all())
    except Exception as exc:  # noqa: BLE001 - the desk must keep trading when the browser push fails
        results = [exc]
    for exc in results:
        if isinstance(exc, OSError | RedisConnectionError | RedisTimeoutError | TimeoutError):
            _warn_unreachable(groups, exc)  # Redis down: a known state, said once a minute
        elif isinstance(exc, BaseException):
            log.error("push to %s failed", groups, exc_info=exc)


def layer_send(group: str, message: Mapping[str, Any]) -> None:
    """channel_layer.group_send that never raises into the caller (see layer_send_many)."""
    layer_send_many([(group, message)])


def coalesce_key(event: Mapping[str, Any]) -> str | None:
    """Where only the newest state matters (a price tick per instrument, the portfolio's P&L), the key under which a
    newer event replaces one still queued for a slow socket; None: every one of them is delivered, in order."""
    kind = event.get("type")
    if kind == "market.tick":
        return f"tick:{event.get('instrument_id')}"
    if kind == "pnl.updated":
        return "pnl"
    return None


def desk_message(events: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The channel-layer message for events to one group, each encoded once (the consumer sends the text as is)."""
    texts = [json.dumps(dict(e)) for e in events]
    keys = [coalesce_key(e) for e in events]
    if len(events) == 1:
        return {"type": "desk.event", "text": texts[0], "key": keys[0]}
    return {"type": "desk.batch", "texts": texts, "keys": keys}


def send_now(group: str, event: Mapping[str, Any]) -> None:
    """Send one event to a group; a dead Redis is logged, never allowed to break the caller."""
    layer_send(group, desk_message([event]))


def send_many(events: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Send several (group, event) at once: one message per group (a `desk.batch` when a group gets several), all
    in one hop to the push loop."""
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for group, event in events:
        by_group.setdefault(group, []).append(event)
    layer_send_many((g, desk_message(evs)) for g, evs in by_group.items())


class _OnCommitBatch:
    """The events a transaction queued, in order, run by Django once it commits (at once outside a transaction)."""

    def __init__(self, group: str, event: Mapping[str, Any]) -> None:
        self.events: list[tuple[str, Mapping[str, Any]]] = [(group, event)]

    def __call__(self) -> None:
        send_many(self.events)


def send_on_commit(group: str, event: Mapping[str, Any], *, using: str = DEFAULT_DB_ALIAS) -> None:
    """Push `event` to `group` once the surrounding transaction commits.

    Consecutive events of one transaction join one batch (one callback, one group send per group) as long as
    nothing else was queued on commit in between and no savepoint was entered or left: Django drops the callbacks
    registered inside a savepoint that rolls back, and a batch holds only events queued under the same savepoints,
    so an event of undone work is never sent."""
    conn = connections[using]
    if conn.in_atomic_block and conn.run_on_commit:
        sids, last, _robust = conn.run_on_commit[-1]
        if isinstance(last, _OnCommitBatch) and sids == set(conn.savepoint_ids):
            last.events.append((group, event))
            return
    transaction.on_commit(_OnCommitBatch(group, event), using=using)
