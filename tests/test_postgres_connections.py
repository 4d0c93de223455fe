"""Database connections on PostgreSQL (hftweb/settings.py, DATABASE_URL): how many the processes keep open.

Daphne runs each request's sync view in a thread of its own (asgiref's ThreadSensitiveContext), so a
connection kept for reuse (CONN_MAX_AGE > 0) stays with a thread that has ended, open until the garbage
collector finds it: PostgreSQL's max_connections (100) is reached by page views alone (Django's docs: disable
persistent connections under ASGI).
"""

import urllib.request

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
                       reason="PostgreSQL only (make test runs it when HFT_TEST_DATABASE_URL is set): SQLite has no "
                       "server connections"),
]


def other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def test_page_views_through_daphne_leave_no_connections_open(daphne_url, operator):
    client = Client()
    client.force_login(operator)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    before = other_backends()
    for _ in range(40):
        req = urllib.request.Request(daphne_url + "/ghosts/", headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
    assert other_backends() - before <= 1


def test_a_feed_whose_connection_is_cut_is_restarted_with_a_new_one(desk, celery_workers):
    """The server ends every connection of the desk (a restart, a failover, a network cut): the feed runner's next
    write fails and its task ends; the supervisor (beat's supervise_feeds, called here) starts it again, and the
    new task's new connection stores bars again."""
    import time

    from django.core.cache import cache

    from apps.ghosts.models import Ghost
    from apps.market.models import Candle, FeedStatus
    from apps.runtime.tasks import run_feed, supervise_feeds

    Ghost.objects.update(enabled=False, status="disabled")  # the feed only
    inst = desk["instrument"].pk
    bars = Candle.objects.filter(instrument_id=inst)

    def wait_for(cond, timeout: float, what: str, tick=None):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, what
            if tick:
                tick()
            time.sleep(0.5)

    run_feed.delay(inst, speed=600)
    try:
        wait_for(lambda: bars.count() >= 3, 60, "the feed stored no bars")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")
            print(f"\nterminated {cursor.rowcount} connections")
        cut_at, before = time.monotonic(), bars.count()
        wait_for(lambda: bars.count() >= before + 3, 60, "bars did not resume after the cut", tick=supervise_feeds)
        print(f"bars resumed {time.monotonic() - cut_at:.1f} s after the cut; feed "
              f"{FeedStatus.objects.get(instrument_id=inst).state}")
    finally:
        cache.delete(f"feed-lock:{inst}")
        # The cut also ended the connection of asgiref's thread for async tests' sync calls; close it there, or the
        # next async test's first query fails with "terminating connection due to administrator command".
        from asgiref.sync import SyncToAsync
        from django.db import connections

        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
