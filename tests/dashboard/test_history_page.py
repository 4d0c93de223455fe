"""The History page: an operator starts a download that runs (the Celery task's own function, pointed at
a local server with the real Binance klines) and pushes its progress to the desk socket's group; a viewer
is refused; bad input says what is wrong and creates nothing."""

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.test import override_settings
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.market.models import Candle, HistoryDownload, Instrument
from apps.market.tasks import download_history_task
from tests.conftest import desk_events
from tests.market.fake_exchange import FakeBinanceRest, vision_klines

pytestmark = pytest.mark.django_db
URL = "/history/"
FORM = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m", "since": "2020-01-01", "until": "2020-01-02"}


@pytest.fixture(autouse=True)
def _offline(no_internet):
    """Every test here must stay on 127.0.0.1 (tests/conftest.py `no_internet`)."""


def drain(layer, channel: str, timeout: float = 2.0) -> list[dict]:
    async def take() -> list[dict]:
        out = []
        while True:
            try:
                out += desk_events(await asyncio.wait_for(layer.receive(channel), timeout))
            except TimeoutError:
                return out
    return async_to_sync(take)()


def test_url_and_nav_link(op_client):
    assert reverse("dashboard:history") == URL
    page = op_client.get(URL)
    assert page.status_code == 200 and 'href="/history/"' in page.content.decode()


def test_operator_starts_a_download_that_runs_and_pushes_live_progress(
        op_client, operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:  # not executed: no worker must run it here
        response = op_client.post(URL, {**FORM, "symbol": "btc/usdt"})
    assert response.status_code == 302 and response.url == URL
    row = HistoryDownload.objects.get()
    assert (row.state, row.instrument.symbol, row.expected, row.requested_by) == ("queued", "BTC/USDT", 1440, operator)
    assert AuditEvent.objects.filter(action="history_download.start", object_id=str(row.pk), actor=operator).exists()
    assert len(callbacks) == 2  # the queued push and the task enqueue, both after commit

    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("feeds", channel)  # the group every desk socket joins
    with FakeBinanceRest(vision_klines()) as binance:
        with override_settings(HFT_EXCHANGE_URLS={"binance": binance.urls()}), \
                django_capture_on_commit_callbacks(execute=True):
            assert download_history_task(row.pk) == "done"  # what the worker runs
    events = [e for e in drain(layer, channel) if e["type"] == "history.progress"]
    assert events[0]["state"] == "running" and events[0]["progress"] == 0.0
    last = events[-1]
    assert {k: last[k] for k in ("download_id", "state", "stored", "progress", "gaps", "missing")} == {
        "download_id": row.pk, "state": "done", "stored": 1440, "progress": 1.0, "gaps": 0, "missing": 0}
    assert Candle.objects.filter(instrument=row.instrument).count() == 1440

    assert download_history_task(row.pk) == "done"  # a duplicate delivery leaves a done row alone
    page = op_client.get(URL).content.decode()
    assert f'id="download-{row.pk}"' in page and ">done<" in page and 'id="download-form"' in page


def test_viewer_sees_the_list_but_cannot_start(viewer_client):
    response = viewer_client.post(URL, FORM)
    assert response.status_code == 403
    assert not HistoryDownload.objects.exists() and not Instrument.objects.exists()
    page = viewer_client.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="download-form"' not in html and "only operators can start downloads" in html


@pytest.mark.parametrize(("change", "message"), [
    ({"until": "2019-12-31"}, "&#x27;until&#x27; must be after &#x27;since&#x27;"),
    ({"timeframe": "1w"}, "timeframe must be one of 1m, 3m"),
    ({"symbol": "BTCUSDT"}, "symbol must look like BTC/USDT"),
    ({"symbol": ""}, "enter a symbol, e.g. BTC/USDT"),
    ({"since": "yesterday"}, "since: enter a date as YYYY-MM-DD (UTC)"),
    ({"since": ""}, "enter the first day, e.g. 2025-05-01"),
    ({"exchange": "ftx"}, "exchange must be one of binance, binanceusdm, okx, kraken, bybit"),
    ({"since": "2999-01-01", "until": ""}, "starts in the future"),
    ({"since": "2000-01-01", "until": ""}, "split it"),
])
def test_bad_input_is_explained_and_creates_nothing(op_client, change, message):
    response = op_client.post(URL, {**FORM, **change})
    html = response.content.decode()
    assert response.status_code == 400
    assert message in html and "The download was not started" in html
    assert not HistoryDownload.objects.exists() and not Instrument.objects.exists()
