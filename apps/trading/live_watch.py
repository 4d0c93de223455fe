"""The protective-stop watch (issue 13, live trading safety): between reconciliations, beat checks every live
position's stop on the exchange (`protect_watch_task`, every PROTECT_WATCH_S seconds, settings
CELERY_BEAT_SCHEDULE "protect-watch").

Why. Reconciliation runs when a worker starts and on `manage.py reconcile`; a stop that disappears in between
(cancelled by hand on the exchange's website, expired, refused after a balance change, never placed because the
entry's stop call failed) would leave a live position bare until the next restart. The watch runs the same
check as reconciliation (`live_executor.protect_position`): missing, cancelled or expired -> placed again; out of
step with the ledger's stop -> moved; filled while nobody looked -> the position closed from that fill; the price
already through the stop -> closed at market. A position whose orders another process is handling right now
(an exit, a stop move) is skipped this round ("busy").

What it tells people. Every action (placed, moved, filled, crossed, cancelled) and every state that needs a
person (unprotected, uncertain, partial, double, error) writes an audit row `protect_watch.<outcome>` on the
position and raises a `protective_stop` alert. A state that stays the same is reported again only every
REPEAT_EVERY_S (the watch runs every 30 s; one alert per run would bury the channel). A stop in step writes
nothing.

Cost. One query for the positions, then per live position one order lookup on the exchange (Binance weight 4),
more only when something is wrong. One watch at a time (a Redis key), so a slow exchange never stacks runs.
"""

from __future__ import annotations

import logging
from collections import Counter

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q

from apps.alerts.models import AlertEvent
from apps.alerts.services import alert_emit
from apps.audit.services import audit_record
from apps.trading.live_client import LiveTradingRefused
from apps.trading.live_executor import protect_position
from apps.trading.models import Mode, Order, Position

log = logging.getLogger(__name__)
PROTECT_WATCH_S = 30.0  # beat's interval (settings.CELERY_BEAT_SCHEDULE["protect-watch"])
WATCH_LOCK = "live:protect-watch"
WATCH_LOCK_S = 55  # above the task's 50 s hard limit: a killed watch's key lapses before the next-but-one run
REPEAT_EVERY_S = 6 * 3600  # an unchanged state needing a person is reported again after this long
ACTIONS = {"placed", "moved", "filled", "crossed", "cancelled"}  # the watch did something: always reported
QUIET = {"kept", "none", "busy"}  # nothing to say


def _last_key(position_id: int) -> str:
    return f"live:protect-watch:last:{position_id}"


def _report(position: Position, outcome: str, detail: str) -> None:
    """Audit row and alert for one finding; an unchanged person-needed state only every REPEAT_EVERY_S."""
    if outcome not in ACTIONS:
        try:
            if not cache.add(_last_key(position.pk), outcome, REPEAT_EVERY_S) and \
                    cache.get(_last_key(position.pk)) == outcome:
                return
            cache.set(_last_key(position.pk), outcome, REPEAT_EVERY_S)
        except Exception:  # Redis unreachable: report (too often beats never)
            pass
    (log.info if outcome in ACTIONS else log.error)("protect watch: %s", detail)
    with transaction.atomic():
        audit_record(actor=None, action=f"protect_watch.{outcome}", obj=position, reason=detail[:2000],
                     after={"outcome": outcome})
    symbol = position.instrument.symbol
    alert_emit(kind=AlertEvent.PROTECTIVE_STOP, title=f"{symbol} live {position.side}: protective stop {outcome}",
               body=detail, data={"position_id": position.pk, "instrument": str(position.instrument),
                                  "outcome": outcome, "stop": position.stop})


def protect_watch() -> dict[str, int]:
    """Check the protective stop of every live position (open, or closed with a stop still resting); returns
    the count per outcome ({} when live trading is off, {"skipped": 1} while another watch runs)."""
    if not settings.HFT_LIVE_TRADING:
        return {}
    try:
        if not cache.add(WATCH_LOCK, 1, WATCH_LOCK_S):
            return {"skipped": 1}
    except Exception as exc:  # no Redis: no broker either, so beat's own run is the only one
        log.warning("protect watch: cache unreachable (%s); running without its lock", type(exc).__name__)
    counts: Counter[str] = Counter()
    refused: set[str] = set()
    try:
        positions = (Position.objects.filter(mode=Mode.LIVE)
                     .filter(Q(status=Position.Status.OPEN)
                             | Q(orders__purpose=Order.Purpose.PROTECT, orders__status=Order.Status.NEW))
                     .select_related("instrument__exchange").distinct().order_by("pk"))
        for position in positions:
            code = position.instrument.exchange.code
            if code in refused:
                counts["refused"] += 1
                continue
            try:
                # wait_s=0: a position whose orders another process handles now is checked next round
                outcome, detail = protect_position(position.pk, how="protect watch: stop filled on the exchange",
                                                   wait_s=0)
            except LiveTradingRefused as exc:  # keys gone: every position there is in the same state
                refused.add(code)
                outcome, detail = "error", f"position #{position.pk}: live trading refused ({exc})"
            except SoftTimeLimitExceeded:  # out of time: stop here, the next run starts where stops are missing
                raise
            except Exception as exc:
                log.exception("protect watch: position %s", position.pk)
                outcome, detail = "error", f"position #{position.pk}: checking its protective stop failed ({exc!r})"
            counts[outcome] += 1
            if outcome not in QUIET:
                _report(position, outcome, detail)
    finally:
        try:
            cache.delete(WATCH_LOCK)
        except Exception:
            pass  # lapses within WATCH_LOCK_S
    return dict(counts)
