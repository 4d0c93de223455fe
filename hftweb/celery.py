"""The Celery app, and what the workers need to ride out a Redis outage (README "Faults").

1. kombu's Redis channel, closed after its connection: Celery 5.7 tidies up a lost broker connection with
   `collect()` and then `close()`. If the worker held an unacknowledged message (a reserved task, a running
   acks_late one) while its consumer channel still waited on BRPOP, the first close stops at the dead socket,
   `collect()` lets go of the transport, and the second close tries to requeue the message through a new pool
   built from `transport.client`, which is None by then: `AttributeError: 'NoneType' object has no attribute
   'hostname'`. Celery's clean-up ignores only connection errors, so the worker logged "Unrecoverable error" and
   exited for good. `_connparams` on a channel whose connection is gone now raises redis's ConnectionError, which
   that clean-up ignores; the message stays in Redis's unacked set and is redelivered after the visibility
   timeout (our tasks are idempotent). Reproduced without a worker in tests/e2e/test_redis_outage.py.
2. Reconnecting: the worker's consumer retries the broker every 0.5 s, then 1 s, then every 2 s (Celery's
   fixed 2, 4, 6 ... 30 s would leave it away up to 16 s after a 60 s outage ended), and for ever
   (CELERY_BROKER_CONNECTION_MAX_RETRIES = None: Redis comes back, the worker carries on).
3. After a REconnection, a worker that consumes the `feeds` queue asks the supervisor at once to restart feeds
   whose runner died with the connection, rather than waiting for beat's next tick (up to 10 s).
"""

import functools
import logging
import os

from celery import Celery, bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hftweb.settings")

log = logging.getLogger(__name__)
RECONNECT_INTERVALS = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}  # seconds


def _closed_redis_channels_raise_connection_errors() -> None:
    """See 1. in the module docstring. Idempotent."""
    import redis
    from kombu.transport import redis as kombu_redis

    connparams = kombu_redis.Channel._connparams
    if getattr(connparams, "hft_guarded", False):
        return

    @functools.wraps(connparams)
    def _connparams(self, *args, **kwargs):
        if getattr(self.connection, "client", None) is None:
            raise redis.exceptions.ConnectionError("broker connection already closed: nothing to clean up through")
        return connparams(self, *args, **kwargs)

    _connparams.hft_guarded = True
    kombu_redis.Channel._connparams = _connparams


_closed_redis_channels_raise_connection_errors()


class Consumer(CeleryConsumer):
    """The worker's consumer, reconnecting to the broker faster (see 2. in the module docstring)."""

    def ensure_connected(self, conn):
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_INTERVALS)
        return super().ensure_connected(conn)


class SuperviseFeedsOnReconnect(bootsteps.StartStopStep):
    """See 3. in the module docstring. Runs each time the consumer (re)starts; the first start is skipped (beat
    supervises a freshly started desk, and tests start feeds themselves)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.starts = 0

    def start(self, parent):
        self.starts += 1
        queues = {q.name for q in getattr(parent.task_consumer, "queues", ())}
        if self.starts == 1 or "feeds" not in queues:
            return
        try:
            parent.app.send_task("apps.market.tasks.supervise_feeds", queue="default", expires=30)
            log.info("broker connection back: asked the supervisor to restart dead feeds")
        except Exception:  # beat's next tick does it anyway
            log.warning("broker connection back, but the supervisor could not be asked now", exc_info=True)


app = Celery("hftweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.worker_consumer = "hftweb.celery:Consumer"
app.steps["consumer"].add(SuperviseFeedsOnReconnect)
app.autodiscover_tasks()
