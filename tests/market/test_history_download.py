"""download_history through ccxt's real code against local servers serving REAL recorded data.

Binance: the data.binance.vision BTCUSDT 1m rows of 2020-01-01..03 served as /api/v3/klines (see
fake_exchange.py); Kraken: ccxt's recorded fetchOHLCV response, as is. Nothing leaves 127.0.0.1.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from apps.market import history
from apps.market.history_services import history_download_create, history_download_run
from apps.market.models import Candle, Exchange, HistoryDownload, Instrument
from tests.market.fake_exchange import FakeBinanceRest, FakeKrakenRest, kraken_ohlcv_case, vision_klines

pytestmark = pytest.mark.django_db

DAY1 = datetime(2020, 1, 1, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
MIN_MS = 60_000
DAY1_MS = history.to_ms(DAY1)


@pytest.fixture(autouse=True)
def _offline(no_internet):
    """Every test here must stay on 127.0.0.1 (tests/conftest.py `no_internet`)."""


@pytest.fixture(scope="module")
def klines():
    return vision_klines()


@pytest.fixture
def binance(klines):
    with FakeBinanceRest(klines) as server:
        yield server


def ex_for(server, code="binance"):
    return history.exchange_create(code, urls=server.urls(), config={"enableRateLimit": False})


class Sleeps(list):
    """Records the backoff delays instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(server, *, since=DAY1, until=DAY2, limit=500, clock=None, retries=history.RETRIES, sleeps=None,
        row=None, code="binance", symbol="BTC/USDT", timeframe="1m"):
    clock = clock or history.wall_clock_ms
    if row is None:
        row = history_download_create(exchange_code=code, symbol=symbol, timeframe=timeframe, since=since,
                                      until=until, clock=clock)
    return history_download_run(download_id=row.pk, exchange=ex_for(server, code), clock=clock, limit=limit,
                                retries=retries, sleep=sleeps if sleeps is not None else Sleeps())


def stored(symbol="BTC/USDT", code="binance", timeframe="1m"):
    return Candle.objects.filter(instrument__exchange__code=code, instrument__symbol=symbol,
                                 timeframe=timeframe).order_by("open_time")


def ms(c: Candle) -> int:
    return history.to_ms(c.open_time)


def test_pages_through_real_klines_keeping_taker_volume_and_trims_to_until(binance, klines):
    assert not Exchange.objects.exists()  # the download creates its exchange and instrument rows
    row = run(binance, limit=500)
    assert row.state == HistoryDownload.State.DONE, row.error
    assert (row.expected, row.fetched, row.stored, row.gaps) == (1440, 1440, 1440, [])
    assert Instrument.objects.get().symbol == "BTC/USDT" and Exchange.objects.get().name == "Binance"
    # pages: each next startTime = last open time + 1 minute; the last one asks only for what is left
    queries = binance.kline_queries()
    assert [int(q["startTime"]) for q in queries] == [DAY1_MS + k * 500 * MIN_MS for k in range(3)]
    assert [int(q["limit"]) for q in queries] == [500, 500, 440]
    assert {int(q["endTime"]) for q in queries} == {history.to_ms(DAY2) - 1}
    # the server holds 3 days; nothing at or after `until` is stored
    candles = list(stored())
    assert len(candles) == 1440 and ms(candles[-1]) == history.to_ms(DAY2) - MIN_MS
    # every stored candle is the real kline row, including the taker-buy volume ccxt's parse_ohlcv drops
    by_time = {k[0]: k for k in klines}
    for c in candles:
        k = by_time[ms(c)]
        assert (c.open, c.high, c.low, c.close, c.volume) == tuple(Decimal(x) for x in k[1:6])
        assert c.taker_buy_volume == Decimal(k[9]) and c.trade_count == k[8]
        assert c.taker_sell_volume == Decimal(k[5]) - Decimal(k[9])


def test_one_dropped_connection_is_retried_with_backoff(binance):
    binance.faults.extend(["ok", "drop", "drop"])  # page 2 fails twice, then is served
    sleeps = Sleeps()
    row = run(binance, sleeps=sleeps)
    assert row.state == HistoryDownload.State.DONE and row.stored == 1440
    assert sleeps == [1.0, 2.0]
    assert len(binance.kline_queries()) == 3 + 2


def test_dropped_connection_fails_the_row_and_a_rerun_resumes_without_duplicates(binance):
    binance.faults.extend(["ok", *["drop"] * 3])  # page 2 never comes back within 2 retries
    sleeps = Sleeps()
    row = run(binance, retries=2, sleeps=sleeps)
    assert row.state == HistoryDownload.State.FAILED  # never "done" with a partial range
    assert row.error.startswith("NetworkError") and "127.0.0.1" in row.error
    assert sleeps == [1.0, 2.0]
    assert row.stored == 500 and stored().count() == 500  # page 1 is kept: closed, complete candles
    assert row.gaps == []

    before = len(binance.kline_queries())
    row = run(binance, row=row)  # the same row again (the command would make a new one: same effect)
    assert row.state == HistoryDownload.State.DONE, row.error
    resumed = binance.kline_queries()[before:]
    assert int(resumed[0]["startTime"]) == DAY1_MS + 500 * MIN_MS  # continues after the last stored bar
    assert [int(q["limit"]) for q in resumed] == [500, 440]
    assert (row.fetched, row.stored, row.gaps) == (940, 940, [])
    times = [ms(c) for c in stored()]
    assert times == [DAY1_MS + k * MIN_MS for k in range(1440)]  # complete, nothing twice

    before = len(binance.requests)
    again = run(binance)  # nothing missing: not a single request, not even the markets
    assert (again.state, again.fetched, again.stored) == ("done", 0, 0)
    assert len(binance.requests) == before


def iso(t: datetime) -> str:
    return t.isoformat()


def test_gap_report_lists_exactly_the_rows_the_exchange_lacks(binance):
    lacking = [DAY1 + timedelta(minutes=m) for m in (0, 1, 2, 600, 601, 602, 603, 604, 750, 1439)]
    binance.omit = {history.to_ms(t) for t in lacking}
    row = run(binance, limit=500)
    assert row.state == HistoryDownload.State.DONE
    m = lambda k: DAY1 + timedelta(minutes=k)  # noqa: E731
    assert row.gaps == [[iso(m(0)), iso(m(2)), 3], [iso(m(600)), iso(m(604)), 5], [iso(m(750)), iso(m(750)), 1],
                        [iso(m(1439)), iso(m(1439)), 1]]
    assert row.stored == 1440 - len(lacking) == stored().count()
    assert not set(binance.omit) & {ms(c) for c in stored()}

    # A rerun asks only at the holes, for no more candles than each hole holds; the exchange still lacks
    # them, so nothing is stored and the same gaps are reported.
    before = len(binance.kline_queries())
    again = run(binance, limit=500)
    queries = binance.kline_queries()[before:]
    assert [(int(q["startTime"]), int(q["limit"])) for q in queries] == [
        (history.to_ms(m(0)), 3), (history.to_ms(m(600)), 5), (history.to_ms(m(750)), 1), (history.to_ms(m(1439)), 1)]
    assert (again.stored, again.gaps) == (0, row.gaps)


def test_the_still_forming_candle_is_never_stored(binance):
    forming = DAY1 + timedelta(hours=5)  # 05:00 opened, closes at 05:01
    now = history.to_ms(forming) + 30_000
    binance.now_ms = now  # the exchange serves it: it is its newest (open) candle
    row = run(binance, since=DAY1 + timedelta(hours=4), until=None, clock=lambda: now)
    assert row.state == HistoryDownload.State.DONE and row.gaps == []
    # Binance honours endTime, so the forming candle is not even asked for (kraken's test below has it on
    # the wire and dropped)
    assert {int(q["endTime"]) for q in binance.kline_queries()} == {history.to_ms(forming) - 1}
    times = [ms(c) for c in stored()]
    assert times[-1] == history.to_ms(forming) - MIN_MS and len(times) == row.expected == 60

    later = history.to_ms(forming) + MIN_MS + 1  # one minute on: it has closed
    binance.now_ms = later
    row = run(binance, since=DAY1 + timedelta(hours=4), until=None, clock=lambda: later)
    assert (row.expected, row.fetched, row.stored) == (61, 1, 1)
    assert ms(stored().last()) == history.to_ms(forming)


def test_kraken_recorded_ohlcv_through_ccxt_parsing():
    case = kraken_ohlcv_case()
    raw = case["httpResponse"]["result"]["XBTUSDT"]  # [time s, o, h, l, c, vwap, volume, count]
    with FakeKrakenRest(case["httpResponse"]) as kraken:
        since = datetime(2024, 1, 30, 15, tzinfo=UTC)
        until = datetime(2024, 2, 1, 16, tzinfo=UTC)
        row = run(kraken, code="kraken", timeframe="1h", since=since, until=until)
        ohlc = [q for p, q in kraken.requests if p == "/0/public/OHLC"]
    assert row.state == HistoryDownload.State.DONE, row.error
    assert ohlc and ohlc[0]["pair"] == "XBTUSDT" and ohlc[0]["interval"] == "60"
    assert len(ohlc) == 1  # the recording ends inside the range: one page covers it
    candles = list(stored(code="kraken", timeframe="1h"))
    assert [ms(c) // 1000 for c in candles] == [r[0] for r in raw]
    for c, r in zip(candles, raw, strict=True):
        assert (c.open, c.high, c.low, c.close, c.volume) == tuple(Decimal(r[i]) for i in (1, 2, 3, 4, 6))
        assert c.taker_buy_volume is None and c.taker_sell_volume is None  # unknown, not zero
    parsed = {p[0]: p[1:] for p in case["parsedResponse"]}  # ccxt's own recorded parse agrees
    for c in candles:
        if ms(c) in parsed:
            assert [float(c.open), float(c.high), float(c.low), float(c.close), float(c.volume)] == parsed[ms(c)]
    # the recorded body skips from 2024-01-30 19:00 to 2024-02-01 15:00: reported, not hidden
    assert row.expected == 49 and row.stored == 6
    assert row.gaps == [["2024-01-30T20:00:00+00:00", "2024-02-01T14:00:00+00:00", 43]]


def test_kraken_forming_candle_on_the_wire_is_dropped():
    """fetch_ohlcv has no end time: kraken sends its newest candle even while it is still open."""
    case = kraken_ohlcv_case()
    newest = datetime.fromtimestamp(case["httpResponse"]["result"]["XBTUSDT"][-1][0], tz=UTC)  # 2024-02-01 15:00
    now = history.to_ms(newest) + 30 * MIN_MS  # half way through that hour
    with FakeKrakenRest(case["httpResponse"]) as kraken:
        row = run(kraken, code="kraken", timeframe="1h", since=datetime(2024, 1, 30, 15, tzinfo=UTC), until=None,
                  clock=lambda: now)
    assert row.state == HistoryDownload.State.DONE, row.error
    candles = list(stored(code="kraken", timeframe="1h"))
    assert (row.expected, row.fetched, row.stored, len(candles)) == (48, 5, 5, 5)
    assert candles[-1].open_time == datetime(2024, 1, 30, 19, tzinfo=UTC)
    assert row.gaps == [["2024-01-30T20:00:00+00:00", "2024-02-01T14:00:00+00:00", 43]]  # 15:00 is not a gap


def test_bad_symbol_fails_the_row_with_the_exchange_error(binance):
    row = run(binance, symbol="ETH/USDT")
    assert row.state == HistoryDownload.State.FAILED and row.error.startswith("BadSymbol")
    assert not binance.kline_queries() and not Candle.objects.exists()


def test_command_downloads_with_progress_bar_and_summary(binance):
    out = StringIO()
    with override_settings(HFT_EXCHANGE_URLS={"binance": binance.urls()}):
        call_command("download_history", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1m",
                     "--since", "2020-01-01", "--until", "2020-01-02T06:00", "--limit", "1000", stdout=out)
    text = out.getvalue()
    print(text.replace("\r", "\n"))
    assert "\r[" in text and "100.0%" in text
    assert "done: expected 1800, fetched 1800, stored 1800 new, 0 gaps (0 candles missing)" in text
    assert stored().count() == 1800 and HistoryDownload.objects.get().state == "done"
    out = StringIO()
    with override_settings(HFT_EXCHANGE_URLS={"binance": binance.urls()}):  # rerun: nothing to fetch
        call_command("download_history", "--exchange", "binance", "--symbol", "BTC/USDT",
                     "--since", "2020-01-01", "--until", "2020-01-02T06:00", stdout=out)
    assert "fetched 0, stored 0 new" in out.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "2020-13-01"], "is not a date"),
    (["--since", "2020-01-02", "--until", "2020-01-01"], "'until' must be after 'since'"),
    (["--since", "2999-01-01"], "starts in the future"),
    (["--since", "2020-01-01", "--exchange", "nosuchexchange"], "unknown exchange"),
])
def test_command_refuses_bad_requests_and_stores_nothing(args, message):
    base = {"--exchange": "binance", "--symbol": "BTC/USDT"}
    for k in range(0, len(args), 2):
        base[args[k]] = args[k + 1]
    flat = [x for kv in base.items() for x in kv]
    with pytest.raises(CommandError, match=message):
        call_command("download_history", *flat, stdout=StringIO())
    assert not HistoryDownload.objects.exists() and not Instrument.objects.exists()


def test_live_warmup_downloads_the_history_the_ghosts_need(binance):
    """A live feed's start: the last N minutes of closed candles come from the exchange (real 2020 rows)."""
    from apps.market.history_services import history_warmup

    ex = Exchange.objects.create(code="binance", name="Binance")
    inst = Instrument.objects.create(exchange=ex, symbol="BTC/USDT", base="BTC", quote="USDT")
    now_ms = DAY1_MS + 1500 * MIN_MS + 30_000  # 25 h into the served data, mid-minute
    row = history_warmup(instrument=inst, minutes=1200, clock=lambda: now_ms, exchange=ex_for(binance))
    assert row.state == HistoryDownload.State.DONE and row.stored == 1200
    times = list(Candle.objects.filter(instrument=inst).order_by("open_time").values_list("open_time", flat=True))
    assert times[0] == DAY1 + timedelta(minutes=300) and times[-1] == DAY1 + timedelta(minutes=1499)
    # a restart finds them stored and asks for nothing
    again = history_warmup(instrument=inst, minutes=1200, clock=lambda: now_ms, exchange=ex_for(binance))
    assert again.stored == 0 and Candle.objects.filter(instrument=inst).count() == 1200
