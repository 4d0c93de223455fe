"""A replay's warm-up (issue 13): the README's one-day replay could never trade, every draft blocked by a trend
gate that had seen nothing before the file's first minute. A fresh replay now warms up on the bars stored before
its first minute; when fewer than the ghosts' warm-up are stored, it downloads them first (as the live feed does;
here from a local server serving the real 2020-01-02 klines through ccxt's own code); with the download off, the
file's own head is the warm-up, as in a backtest of the file."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from apps.ghosts.selectors import warmup_minutes_needed
from apps.market.history_services import history_download_create, history_download_run
from apps.market.models import Candle, FeedStatus, HistoryDownload
from apps.runtime.tasks import run_feed
from tests.datafiles import require
from tests.market.fake_exchange import FakeBinanceRest, vision_klines

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

DAY3 = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-03.zip"
START = datetime(2020, 1, 3, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _offline(no_internet):
    """Nothing leaves 127.0.0.1."""


def _before(inst):
    return Candle.objects.filter(instrument=inst, open_time__lt=START)


def _replay(inst) -> str:
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{require(DAY3)}@max")
    return run_feed(inst.pk)


def test_missing_history_is_downloaded_before_the_first_minute(desk, caplog):
    inst = desk["instrument"]
    minutes = warmup_minutes_needed(instrument_id=inst.pk) + 30
    rows = vision_klines()
    with FakeBinanceRest(rows) as server, caplog.at_level(logging.INFO), override_settings(
            HFT_REPLAY_WARMUP_DOWNLOAD=True, HFT_EXCHANGE_URLS={"binance": server.urls()}):
        assert _replay(inst) == "stopped"
    row = HistoryDownload.objects.get()
    assert (row.state, row.since, row.until) == ("done", START - timedelta(minutes=minutes), START)
    before = list(_before(inst).order_by("open_time"))
    assert len(before) == minutes and before[0].open_time == START - timedelta(minutes=minutes)
    real = {r[0]: r for r in rows}  # the server's rows are the real file's: the stored bars are those
    last = real[int(before[-1].open_time.timestamp() * 1000)]
    assert (float(before[-1].open), float(before[-1].close)) == (float(last[1]), float(last[4]))
    assert Candle.objects.filter(instrument=inst, open_time__gte=START).count() == 1440
    assert f"warms up on stored history ({minutes} of {minutes} bars before 2020-01-03 00:00" in caplog.text


def test_stored_history_is_used_as_it_is(desk, caplog):
    inst = desk["instrument"]
    minutes = warmup_minutes_needed(instrument_id=inst.pk) + 30
    with FakeBinanceRest(vision_klines()) as server:
        with override_settings(HFT_EXCHANGE_URLS={"binance": server.urls()}):  # the History page's download
            row = history_download_create(exchange_code="binance", symbol="BTC/USDT", timeframe="1m",
                                          since=START - timedelta(days=1), until=START)
            history_download_run(download_id=row.pk)
        with caplog.at_level(logging.INFO), override_settings(
                HFT_REPLAY_WARMUP_DOWNLOAD=True, HFT_EXCHANGE_URLS={"binance": server.urls()}):
            assert _replay(inst) == "stopped"
    assert HistoryDownload.objects.count() == 1  # nothing downloaded again
    assert minutes <= 1440
    assert f"warms up on stored history ({minutes} bars before 2020-01-03 00:00)" in caplog.text


def test_without_the_download_the_files_head_is_the_warm_up(desk, caplog):
    inst = desk["instrument"]
    minutes = warmup_minutes_needed(instrument_id=inst.pk) + 30
    with caplog.at_level(logging.INFO):
        assert _replay(inst) == "stopped"
    assert not _before(inst).exists() and not HistoryDownload.objects.exists()
    assert f"warms up on the file's own head (0 of {minutes} warm-up minutes stored before it)" in caplog.text
