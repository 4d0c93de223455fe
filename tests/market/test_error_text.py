"""Feed and download errors with NUL bytes, a file name's non-UTF-8 byte or megabytes of text are stored and shown
cut and cleaned, never a crash; an HFT_FEED the database cannot store is refused at start saying why (issue 12
leftovers).

Before: PostgreSQL refused a NUL in FeedStatus.last_error / HistoryDownload.error (DataError), a lone surrogate (how
Python decodes a file name's bad byte) failed the write on both databases (UnicodeEncodeError), so the failure
being recorded became a second one, in the feed task's or the download's error handler, and the row kept its old
state; and an error of any length was stored and pushed whole. An HFT_FEED over 255 characters failed make run's
setup with a DataError on PostgreSQL (SQLite stored it).

Marked postgres: `make test` runs them again on PostgreSQL (.ci/run), where the NUL cases crashed.
"""

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.common.text import ERROR_TEXT_LIMIT, db_text, has_unstorable
from apps.market import history
from apps.market.events import FEEDS_GROUP
from apps.market.history_services import history_download_create, history_download_run
from apps.market.models import FeedStatus, HistoryDownload
from apps.market.services import feed_status_update
from tests.conftest import ROOT, desk_events

NASTY = "upstream \x00 said: bad\udcffname.csv " + "x" * 1_000_000  # NUL, a lone surrogate, a megabyte


def test_db_text_drops_nul_replaces_surrogates_and_cuts_saying_so():
    assert db_text("a\x00b") == "ab"
    assert db_text("bad\udcffname") == "bad\ufffdname"
    assert db_text("ünïcödé ✓") == "ünïcödé ✓"  # what is fine stays as it is
    cut = db_text("y" * 5000)
    assert len(cut) <= ERROR_TEXT_LIMIT and cut.endswith("more characters]") and cut.startswith("y" * 1900)
    assert not has_unstorable(db_text(NASTY)) and has_unstorable(NASTY)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_feed_error_with_nul_a_bad_byte_and_a_megabyte_is_stored_cut_and_pushed(desk):
    inst = desk["instrument"].pk
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(FEEDS_GROUP, channel)
    feed_status_update(instrument_id=inst, state=FeedStatus.State.ERROR, last_error=NASTY)
    fs = FeedStatus.objects.get(instrument_id=inst)
    assert fs.state == "error"
    assert fs.last_error.startswith("upstream  said: bad\ufffdname.csv xxx") and len(fs.last_error) <= ERROR_TEXT_LIMIT
    (pushed,) = desk_events(async_to_sync(layer.receive)(channel))
    assert pushed["state"] == "error" and pushed["last_error"] == fs.last_error
    # the same error again is no change (no write, no alert): what is compared is the cleaned text
    before = fs.updated_at
    feed_status_update(instrument_id=inst, last_error=NASTY, push=False)
    assert FeedStatus.objects.get(instrument_id=inst).updated_at == before


class _Broken(BaseHTTPRequestHandler):
    """An exchange that answers every request with a 500 whose body holds a NUL, a non-UTF-8 byte and 200 KB."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"upstream \x00 broke \xff " + b"z" * 200_000
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_download_failing_with_such_an_answer_is_failed_with_a_clean_error(no_internet):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Broken)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
        row = history_download_create(exchange_code="binance", symbol="BTC/USDT", timeframe="1m",
                                      since=datetime(2020, 1, 1, tzinfo=UTC), until=datetime(2020, 1, 2, tzinfo=UTC))
        ex = history.exchange_create("binance", urls={"public": base}, config={"enableRateLimit": False})
        row = history_download_run(download_id=row.pk, exchange=ex, retries=1, sleep=lambda s: None)
    finally:
        server.shutdown()
        server.server_close()
    row = HistoryDownload.objects.get(pk=row.pk)
    assert row.state == HistoryDownload.State.FAILED
    assert "500" in row.error or "broke" in row.error, row.error[:300]
    assert len(row.error) <= ERROR_TEXT_LIMIT and not has_unstorable(row.error)


def _settings_with(hft_feed: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hftweb.settings_test"}
    env_b = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in env.items()}
    env_b[b"HFT_FEED"] = os.fsencode(hft_feed)
    return subprocess.run([sys.executable, "-c", "import django; django.setup(); print('started')"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env_b)


@pytest.mark.parametrize(("feed", "said"), [
    ("replay:" + "a" * 249, "HFT_FEED is 256 characters"),
    ("replay:" + "é" * 300, "HFT_FEED is 307 characters"),
    (os.fsdecode(b"replay:bad\xffname.csv"), "HFT_FEED 'replay:bad\\udcffname.csv' holds a byte that is not UTF-8"),
])
def test_an_hft_feed_the_database_cannot_store_refuses_to_start_saying_why(feed: str, said: str):
    out = _settings_with(feed)
    assert out.returncode != 0, out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"django.core.exceptions.ImproperlyConfigured: {said}"), last


def test_an_hft_feed_of_255_characters_starts():
    out = _settings_with("replay:" + "a" * 248)
    assert out.returncode == 0 and out.stdout.strip() == "started", out.stderr[-2000:]
