"""The live feed (apps/market/live_feed.py) end to end, offline.

Boundary tested: the REAL ccxt.pro / ccxt async code (subscription, Binance and Kraken message parsing,
reconnect) against LOCAL servers started by the tests on 127.0.0.1 (tests/fakes/binance_ws.py): a
`websockets` server speaking Binance's stream protocol and a stdlib HTTP server for `exchangeInfo`,
`aggTrades` and Kraken's public REST. Everything they send is REAL recorded market data from
../shared/data; nothing below ccxt is mocked, and LiveFeed runs in-process on the test database with its
real FeedPipeline (sanitiser, bar builder, candle_store, feed status). No connection leaves 127.0.0.1
(an autouse fixture makes any other DNS lookup fail).

Expected bars are computed independently here with a pandas groupby on the same real rows
(OHLC = first/max/min/last, volumes and taker split = sums, counts, whale and liquidation sums).
"""

import copy
import csv
import gzip
import io
import json
import socket
import time
import zipfile
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.market.exchanges import liquidation_from_ccxt
from apps.market.live_feed import LiveFeed, backoff_delay
from apps.market.models import Candle, Exchange, FeedStatus, Instrument
from apps.runtime.pipeline import pipeline_factory
from tests.datafiles import require
from tests.fakes.binance_ws import (
    FakeBinanceWs,
    LocalHttp,
    agg_trade_event,
    agg_trades_rest_row,
    force_order_event,
    spot_exchange_info,
    trade_event,
    usdm_exchange_info,
)

pytestmark = pytest.mark.django_db(transaction=True)

FREQTRADE = "trades/freqtrade_orderflow_public_trades_list_2023-02-02.csv"
LARGE_AGG = "trades/binance_usdm_large_aggtrades_ge15kusd_2025-01-26_2025-02-06.csv.gz"
FORCE_ORDERS = "liquidations/binance_usdm_forceorder_2025-01-26_2025-02-06.csv"
COINM_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
KRAKEN = "ccxt-static/response_kraken.json"
MIN = 60_000


@pytest.fixture(autouse=True)
def _offline(no_internet):
    """Every test here must stay on 127.0.0.1 (tests/conftest.py `no_internet`)."""


# ------------------------------------------------------------------ real data, as strings (wire text)


def freqtrade_trades() -> list[dict]:
    """1000 consecutive real trades of 2023-02-02 09:20-09:23 (ccxt format; pair ETH/USDT by its price)."""
    with open(require(FREQTRADE), newline="") as f:
        return list(csv.DictReader(f))


def large_usdm_btc(start_ms: int, end_ms: int) -> list[list[str]]:
    """Real USDT-M BTCUSDT aggTrades with notional >= 15k USD (a recorder's filter), sorted by trade time."""
    with gzip.open(require(LARGE_AGG), "rt", newline="") as f:
        rows = [r for r in csv.reader(f) if r[1].strip() == "BTCUSDT" and start_ms <= int(r[5]) < end_ms]
    return sorted(rows, key=lambda r: (int(r[5]), int(r[2])))


def btc_force_orders(start_ms: int, end_ms: int) -> list[list[str]]:
    with open(require(FORCE_ORDERS), newline="") as f:
        rows = [r for r in csv.reader(f) if r[0] == "BTC" and start_ms <= int(r[10]) < end_ms]
    return sorted(rows, key=lambda r: int(r[10]))


def coinm_agg_trades(n: int) -> list[dict]:
    path = require(COINM_DAY)
    with zipfile.ZipFile(path) as z, z.open(z.namelist()[0]) as f:
        reader = csv.DictReader(io.TextIOWrapper(f))
        return [row for _, row in zip(range(n), reader, strict=False)]


# ------------------------------------------------------------------ the independent computation


def expected_bars(trades: pd.DataFrame, whale_notional: float, liqs: pd.DataFrame | None = None) -> pd.DataFrame:
    """1m bars by pandas groupby from trades (ts_ms, price, amount [base], side [taker]) and optional
    liquidations (ts_ms, side [long/short], amount [base]); minutes without trades have no bar."""
    t = trades.assign(minute=trades.ts_ms // MIN * MIN)
    buy = t.amount.where(t.side == "buy", 0.0)
    whale = t.price * t.amount >= whale_notional
    t = t.assign(buy=buy, sell=t.amount - buy, wbuy=buy.where(whale, 0.0), wsell=(t.amount - buy).where(whale, 0.0))
    g = t.groupby("minute")
    out = pd.DataFrame({
        "open": g.price.first(), "high": g.price.max(), "low": g.price.min(), "close": g.price.last(),
        "volume": g.amount.sum(), "taker_buy_volume": g.buy.sum(), "taker_sell_volume": g.sell.sum(),
        "trade_count": g.size(), "whale_buy_volume": g.wbuy.sum(), "whale_sell_volume": g.wsell.sum(),
    })
    if liqs is None:
        out["liq_long_volume"] = np.nan
        out["liq_short_volume"] = np.nan
    else:
        lq = liqs.assign(minute=liqs.ts_ms // MIN * MIN)
        sums = lq.pivot_table(index="minute", columns="side", values="amount", aggfunc="sum")
        out["liq_long_volume"] = sums.get("long", pd.Series(dtype=float)).reindex(out.index).fillna(0.0)
        out["liq_short_volume"] = sums.get("short", pd.Series(dtype=float)).reindex(out.index).fillna(0.0)
    out.index = pd.to_datetime(out.index, unit="ms", utc=True)
    return out


def stored_bars(instrument: Instrument) -> pd.DataFrame:
    cols = ["open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "trade_count",
            "whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume"]
    rows = list(Candle.objects.filter(instrument=instrument).order_by("open_time").values("open_time", *cols))
    df = pd.DataFrame(rows).set_index("open_time")
    df.index = pd.DatetimeIndex(df.index).tz_convert("UTC")
    return df.map(lambda v: float(v) if isinstance(v, Decimal) else (np.nan if v is None else v)).astype(float)


def assert_bars_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.index) == list(want.index)
    for col in want.columns:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(dtype=float), rtol=1e-9, atol=2e-10,
                                   err_msg=col)


# ------------------------------------------------------------------ helpers


def make_instrument(code: str, symbol: str, whale_notional: str = "100000") -> Instrument:
    ex = Exchange.objects.create(code=code, name=code)
    base, quote = symbol.split(":")[0].split("/")
    inst = Instrument.objects.create(exchange=ex, symbol=symbol, base=base, quote=quote,
                                     whale_notional=Decimal(whale_notional))
    FeedStatus.objects.create(instrument=inst, source="live")
    return Instrument.objects.select_related("exchange").get(pk=inst.pk)


class ReceivedClock:
    """The exchange clock for a replay faster than real time: the newest data time the feed's network
    thread has handed over, minus `lag_ms` (a real clock is wall time, and trades reach us in well under
    the bar grace; accelerated, a few ms of thread scheduling are seconds of data, so a paced replay
    with two streams keeps a margin). Once `total` trades are in, time runs on at `tail_speed` x wall
    time, as a quiet market's would: the last bar must then be closed by the flush, the feed turn LAGGING."""

    def __init__(self, holder: list, first_ms: int, total: int, tail_speed: float = 60.0, lag_ms: int = 0) -> None:
        self.holder, self.first_ms, self.total, self.tail_speed = holder, first_ms, total, tail_speed
        self.lag_ms, self.done_at = lag_ms, None

    def __call__(self) -> int:
        feed = self.holder[0]
        newest = max(feed.newest_received_ms - self.lag_ms, self.first_ms)
        if feed.trades_handed < self.total:
            return newest
        if self.done_at is None:
            self.done_at = time.monotonic()
        return int(newest + (time.monotonic() - self.done_at) * self.tail_speed * 1000)


class PacedClock:
    """An exchange clock for REST fakes: starts at `start_ms`, runs `speed` times wall time once started."""

    def __init__(self, start_ms: int, speed: float) -> None:
        self.start_ms, self.speed, self.t0 = start_ms, speed, None

    def __call__(self) -> int:
        if self.t0 is None:
            self.t0 = time.monotonic()
        return int(self.start_ms + (time.monotonic() - self.t0) * self.speed * 1000)


def stop_when(predicate, holder: list):
    """A heartbeat that ends the run once predicate(feed) holds (called from the feed's ORM thread)."""
    return lambda: not predicate(holder[0])


def state_names(feed: LiveFeed) -> list[str]:
    return [s for s, _, _ in feed.transitions]


# ------------------------------------------------------------------ tests


def test_spot_trade_stream_with_a_disconnect_stores_exactly_the_groupby_bars():
    rows = freqtrade_trades()
    inst = make_instrument("binance", "ETH/USDT", whale_notional="20000")
    events = [trade_event(int(r["timestamp"]), r["id"], r["price"], r["amount"], r["side"], "ETHUSDT") for r in rows]
    df = pd.DataFrame({"ts_ms": [int(r["timestamp"]) for r in rows], "price": [float(r["price"]) for r in rows],
                       "amount": [float(r["amount"]) for r in rows], "side": [r["side"] for r in rows]})
    want = expected_bars(df, whale_notional=20_000)
    rest = LocalHttp({"/api/v3/exchangeInfo": lambda q: (200, spot_exchange_info(("ETH", "USDT")))})
    with rest, FakeBinanceWs({"ethusdt@trade": events}, resend_on_reconnect=5) as ws:
        ws.drop_after = 400  # the server closes the socket after 400 trades, then replays its last 5
        holder: list[LiveFeed] = []
        clock = ReceivedClock(holder, int(rows[0]["timestamp"]) - 1, total=len(rows) + 1)  # + >= 1 replayed
        feed = LiveFeed(
            inst, make_pipeline=pipeline_factory(inst), max_seconds=60, clock_ms=clock, network_backoff=(0.2, 2.0),
            exchange_config={"urls": {"api": {"public": f"{rest.base}/api/v3", "ws": ws.urls()}},
                             "enableRateLimit": False},
            heartbeat=lambda: True,
        )
        holder.append(feed)
        feed.heartbeat = stop_when(lambda f: f.pipeline.bars_stored >= len(want)
                                   and state_names(f)[-1] == FeedStatus.State.LAGGING, holder)
        feed.run()
        time.sleep(0.2)
        open_after = ws.open_connections
    assert_bars_equal(stored_bars(inst), want)
    # the drop: one RECONNECTING with the ccxt NetworkError and a retry time, then CONNECTED again
    names = state_names(feed)
    i = names.index(FeedStatus.State.RECONNECTING)
    state, error, retry_at = feed.transitions[i]
    assert "NetworkError" in error and "closing code 1000" in error and retry_at is not None
    assert FeedStatus.State.CONNECTED in names[i + 1:]
    assert names[-1] == FeedStatus.State.LAGGING  # stream over, exchange clock ran on: last trade > 30 s old
    subscribes = [m for _, m in ws.received if m.get("method") == "SUBSCRIBE"]
    assert [m["params"] for m in subscribes] == [["ethusdt@trade"], ["ethusdt@trade"]] and ws.drops == 1
    # Up to 5 replayed trades (ccxt may have taken in the last one before the close raised) were dropped by
    # the sanitiser's id check; nothing else was rejected, nothing is missing (the bars above are exact).
    replayed = feed.trades_received - len(rows)
    assert 1 <= replayed <= 5 and feed.pipeline.counts() == {"duplicate_id": replayed}
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.rejected == {"duplicate_id": replayed} and float(fs.last_price) == float(rows[-1]["price"])
    assert fs.last_trade_at.timestamp() * 1000 == int(rows[-1]["timestamp"])
    assert "closing code 1000" in fs.last_error and fs.next_retry_at is None
    assert open_after == 0  # the exchange was closed on exit (its socket is gone)
    assert stored_bars(inst)[["liq_long_volume", "liq_short_volume"]].isna().all().all()  # spot: no liq feed


def test_usdm_aggtrades_and_liquidations_land_in_their_minutes():
    start, end = 1737996720000, 1737997740000  # 2025-01-27 16:52 .. 17:09 UTC: a BTC liquidation cascade
    rows = large_usdm_btc(start, end)
    liq_rows = btc_force_orders(start, end)
    assert len(rows) > 500 and len(liq_rows) > 20  # the window really holds trades and liquidations
    inst = make_instrument("binanceusdm", "BTC/USDT:USDT")
    trades = [agg_trade_event(int(r[5]), int(r[2]), r[3], r[4], r[6] == "True", "BTCUSDT", int(r[0])) for r in rows]
    streams = {"btcusdt@aggTrade": trades, "btcusdt@forceOrder": [force_order_event(r) for r in liq_rows]}
    tdf = pd.DataFrame({"ts_ms": [int(r[5]) for r in rows], "price": [float(r[3]) for r in rows],
                        "amount": [float(r[4]) for r in rows],
                        "side": ["sell" if r[6] == "True" else "buy" for r in rows], "id": [r[2] for r in rows]})
    tdf = tdf.drop_duplicates("id")  # a repeated agg id is one trade
    # The recording holds most forceOrder events twice (recorder artefact; one pair differs only in the
    # recorder's own usd_size column): one liquidation per (time, side, avg price, accumulated qty).
    ldf = pd.DataFrame({"ts_ms": [int(r[10]) for r in liq_rows],
                        "side": ["long" if r[1] == "SELL" else "short" for r in liq_rows],
                        "ap": [r[6] for r in liq_rows], "amount": [float(r[9]) for r in liq_rows]})
    ldf = ldf.drop_duplicates()
    want = expected_bars(tdf, whale_notional=100_000, liqs=ldf)
    rest = LocalHttp({"/fapi/v1/exchangeInfo": lambda q: (200, usdm_exchange_info("BTC"))})
    with rest, FakeBinanceWs(streams, speed=100) as ws:  # paced: 17 data minutes in 10 s
        holder: list[LiveFeed] = []
        feed = LiveFeed(
            inst, make_pipeline=pipeline_factory(inst),
            max_seconds=60, clock_ms=ReceivedClock(holder, start, total=len(rows), lag_ms=4000),
            exchange_config={"urls": {"api": {"fapiPublic": f"{rest.base}/fapi/v1", "ws": ws.urls()}},
                             "enableRateLimit": False},
            heartbeat=lambda: True,
        )
        holder.append(feed)
        feed.heartbeat = stop_when(lambda f: f.pipeline.bars_stored >= len(want), holder)
        assert feed.has_liquidations
        feed.run()
    subs = sorted((m["params"][0], p) for p, m in ws.received if m.get("method") == "SUBSCRIBE")
    # both on ONE socket (streamLimits 1), so the exchange's order of trades and liquidations is kept
    assert subs == [("btcusdt@aggTrade", "/linear/market/ws/0"), ("btcusdt@forceOrder", "/linear/market/ws/0")]
    got = stored_bars(inst)
    assert_bars_equal(got, want)
    assert got.liq_long_volume.sum() > 0  # the cascade (SELL = longs liquidated) is in the bars
    counts = feed.pipeline.counts()
    assert counts.get("duplicate_liquidation") == len(liq_rows) - len(ldf)
    assert not feed.pipeline.builder.late_liquidations


def test_rest_polling_fetch_trades_with_since_stores_the_groupby_bars():
    rows = freqtrade_trades()
    inst = make_instrument("binance", "ETH/USDT", whale_notional="20000")
    body = [agg_trades_rest_row(int(r["timestamp"]), int(r["id"]), r["price"], r["amount"], r["side"]) for r in rows]
    # The fake exchange's trades appear at 120x real time; the feed's clock is what it has received (at 120x a
    # 0.1 s poll is 12 s of data, longer than the bar grace: that timing is the websocket tests' business).
    clock = PacedClock(int(rows[0]["timestamp"]) - 1, speed=120)

    def agg_trades(q: dict) -> tuple[int, list]:
        """GET /api/v3/aggTrades as Binance answers it: what exists by now, startTime/endTime inclusive,
        the oldest `limit` rows with startTime, else the newest."""
        now = clock()
        lo, hi = int(q.get("startTime", 0)), min(int(q.get("endTime", now)), now)
        limit = min(int(q.get("limit", 500)), 1000)
        sel = [b for b in body if lo <= b["T"] <= hi]
        return 200, sel[:limit] if "startTime" in q else sel[-limit:]

    df = pd.DataFrame({"ts_ms": [int(r["timestamp"]) for r in rows], "price": [float(r["price"]) for r in rows],
                       "amount": [float(r["amount"]) for r in rows], "side": [r["side"] for r in rows]})
    want = expected_bars(df, whale_notional=20_000)
    routes = {"/api/v3/exchangeInfo": lambda q: (200, spot_exchange_info(("ETH", "USDT"))),
              "/api/v3/aggTrades": agg_trades}
    with LocalHttp(routes) as rest:
        holder: list[LiveFeed] = []
        feed = LiveFeed(inst, make_pipeline=pipeline_factory(inst), max_seconds=60, transport="rest", poll_seconds=0.1,
                        clock_ms=ReceivedClock(holder, int(rows[0]["timestamp"]) - 1, total=len(rows)),
                        exchange_config={"urls": {"api": {"public": f"{rest.base}/api/v3"}},
                                         "enableRateLimit": False},
                        heartbeat=lambda: True)
        holder.append(feed)
        feed.heartbeat = stop_when(lambda f: f.pipeline.bars_stored >= len(want), holder)
        feed.run()
    assert not feed.websocket and not feed.has_liquidations
    assert_bars_equal(stored_bars(inst), want)
    polls = [p for p in rest.requests if p.startswith("/api/v3/aggTrades")]
    assert any("startTime=" in p for p in polls)  # polled forward with since, not by re-reading the latest
    assert feed.pipeline.counts() == {}  # the since-boundary overlap never reached the sanitiser
    assert feed.trades_received == len(rows)


KRAKEN_ASSETS = {"error": [], "result": {
    "XXBT": {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5, "status": "enabled"},
    "USDT": {"aclass": "currency", "altname": "USDT", "decimals": 8, "display_decimals": 4, "status": "enabled"}}}
KRAKEN_PAIRS = {"error": [], "result": {"XBTUSDT": {
    "altname": "XBTUSDT", "wsname": "XBT/USDT", "aclass_base": "currency", "base": "XXBT", "aclass_quote": "currency",
    "quote": "USDT", "lot": "unit", "cost_decimals": 5, "pair_decimals": 1, "lot_decimals": 8, "lot_multiplier": 1,
    "leverage_buy": [2, 3], "leverage_sell": [2, 3], "fees": [[0, 0.26]], "fees_maker": [[0, 0.16]],
    "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40, "ordermin": "0.0001", "costmin": "0.5",
    "tick_size": "0.1", "status": "online"}}}


def test_kraken_rest_polling_parses_the_recorded_fetch_trades_response():
    case = json.loads(require(KRAKEN).read_text())["methods"]["fetchTrades"][0]
    recorded = case["parsedResponse"][0]  # what ccxt parsed when the fixture was recorded
    inst = make_instrument("kraken", "BTC/USDT")
    routes = {"/0/public/Assets": lambda q: (200, KRAKEN_ASSETS), "/0/public/AssetPairs": lambda q: (200, KRAKEN_PAIRS),
              "/0/public/Trades": lambda q: (200, copy.deepcopy(case["httpResponse"]))}
    # The clock starts 0.5 s after the recorded trade (still its minute) and runs 5x: its bar is due 3 s later.
    clock = PacedClock(recorded["timestamp"] + 500, speed=5)
    with LocalHttp(routes) as rest:
        holder: list[LiveFeed] = []
        feed = LiveFeed(inst, make_pipeline=pipeline_factory(inst),
                        max_seconds=20, clock_ms=clock, transport="rest", poll_seconds=0.1,
                        exchange_config={"urls": {"api": {"public": rest.base}}, "enableRateLimit": False},
                        heartbeat=lambda: True)
        holder.append(feed)
        feed.heartbeat = stop_when(lambda f: f.pipeline.bars_stored >= 1 and len(rest.requests) >= 5, holder)
        feed.run()
    got = stored_bars(inst)
    assert len(got) == 1 and got.index[0].timestamp() * 1000 == recorded["timestamp"] // MIN * MIN
    bar = got.iloc[0]
    assert bar.open == bar.close == recorded["price"] and bar.volume == pytest.approx(recorded["amount"])
    assert bar.taker_buy_volume == pytest.approx(recorded["amount"]) and bar.trade_count == 1  # side "buy"
    assert np.isnan(bar.liq_long_volume)  # REST: no liquidation stream, unknown is not zero
    assert feed.trades_received == 1  # polled again and again; the same trade was handed on once
    assert any(p.startswith("/0/public/Trades?pair=XBTUSDT&since=") for p in rest.requests)


def test_unknown_symbol_is_an_error_state_with_message_and_a_slow_retry():
    inst = make_instrument("binance", "DOGE/EUR")
    with LocalHttp({"/api/v3/exchangeInfo": lambda q: (200, spot_exchange_info(("ETH", "USDT")))}) as rest:
        feed = LiveFeed(inst, make_pipeline=pipeline_factory(inst),
                        heartbeat=lambda: True, max_seconds=1.5, clock_ms=lambda: 1_700_000_000_000,
                        exchange_config={"urls": {"api": {"public": f"{rest.base}/api/v3",
                                                          "ws": {"spot": "ws://127.0.0.1:9/stream/ws"}}}})
        before = time.time()
        feed.run()
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.state == FeedStatus.State.ERROR
    assert "BadSymbol" in fs.last_error and "DOGE/EUR" in fs.last_error
    assert 15 <= fs.next_retry_at.timestamp() - before <= 31  # exchange-error backoff: 30 s base, jittered
    assert FeedStatus.State.RECONNECTING not in state_names(feed)


def test_nothing_listening_means_reconnecting_with_growing_backoff():
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inst = make_instrument("binance", "ETH/USDT")
    feed = LiveFeed(inst, make_pipeline=pipeline_factory(inst),
                    heartbeat=lambda: True, max_seconds=3.0, clock_ms=lambda: 1_700_000_000_000,
                    network_backoff=(0.1, 0.8),
                    exchange_config={"urls": {"api": {"public": f"http://127.0.0.1:{port}/api/v3",
                                                      "ws": {"spot": f"ws://127.0.0.1:{port}/stream/ws"}}}})
    feed.run()
    retries = [(e, r) for s, e, r in feed.transitions if s == FeedStatus.State.RECONNECTING]
    assert len(retries) >= 3
    assert all("ExchangeNotAvailable" in e or "NetworkError" in e for e, _ in retries)
    gaps = [(b[1] - a[1]).total_seconds() for a, b in zip(retries, retries[1:], strict=False)]
    assert max(gaps) > min(gaps)  # exponential: later retries wait longer
    assert FeedStatus.objects.get(instrument=inst).state == FeedStatus.State.RECONNECTING


def test_a_lost_heartbeat_stops_the_runner_and_closes_the_exchange():
    rows = freqtrade_trades()
    inst = make_instrument("binance", "ETH/USDT")
    events = [trade_event(int(r["timestamp"]), r["id"], r["price"], r["amount"], r["side"], "ETHUSDT") for r in rows]
    beats = iter([True, True, False])
    with (LocalHttp({"/api/v3/exchangeInfo": lambda q: (200, spot_exchange_info(("ETH", "USDT")))}) as rest,
          FakeBinanceWs({"ethusdt@trade": events}, speed=1) as ws):  # real time: the stream is far from over
        feed = LiveFeed(inst, make_pipeline=pipeline_factory(inst),
                        heartbeat=lambda: next(beats), max_seconds=30, clock_ms=ws.clock_ms,
                        exchange_config={"urls": {"api": {"public": f"{rest.base}/api/v3", "ws": ws.urls()}}})
        t0 = time.monotonic()
        feed.run()
        took = time.monotonic() - t0
        time.sleep(0.2)
        assert ws.open_connections == 0 and ws.remaining() > 0
    assert took < 10  # stopped on the third beat (about 2 s), not at max_seconds
    assert feed.trades_received > 0


def test_inverse_aggtrade_burst_converts_contracts_and_reports_throughput(capsys):
    rows = coinm_agg_trades(20_000)  # real COIN-M BTCUSD_PERP prints, 2026-05-08 from 00:00 UTC
    inst = make_instrument("binance", "BTC/USD:BTC")
    events = [agg_trade_event(int(r["transact_time"]), int(r["agg_trade_id"]), r["price"], r["quantity"],
                              r["is_buyer_maker"] == "true", "BTCUSD_PERP") for r in rows]
    price = np.array([float(r["price"]) for r in rows])
    df = pd.DataFrame({"ts_ms": [int(r["transact_time"]) for r in rows], "price": price,
                       "amount": np.array([float(r["quantity"]) for r in rows]) * 100.0 / price,  # 100 USD contracts
                       "side": ["sell" if r["is_buyer_maker"] == "true" else "buy" for r in rows]})
    want = expected_bars(df, whale_notional=100_000)
    coinm = {"timezone": "UTC", "symbols": [{
        "symbol": "BTCUSD_PERP", "pair": "BTCUSD", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
        "contractStatus": "TRADING", "contractSize": 100, "baseAsset": "BTC", "quoteAsset": "USD",
        "marginAsset": "BTC", "pricePrecision": 1, "quantityPrecision": 0,
        "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.1"},
                    {"filterType": "LOT_SIZE", "minQty": "1", "maxQty": "1000000", "stepSize": "1"}]}]}
    routes = {"/dapi/v1/exchangeInfo": lambda q: (200, coinm),
              "/fapi/v1/exchangeInfo": lambda q: (200, {"timezone": "UTC", "symbols": []})}
    with LocalHttp(routes) as rest, FakeBinanceWs({"btcusd_perp@aggTrade": events}) as ws:
        holder: list[LiveFeed] = []
        feed = LiveFeed(
            inst, make_pipeline=pipeline_factory(inst), max_seconds=120, heartbeat=lambda: True,
            clock_ms=ReceivedClock(holder, int(rows[0]["transact_time"]) - 1, total=len(rows), tail_speed=600),
            exchange_config={"urls": {"api": {"fapiPublic": f"{rest.base}/fapi/v1",
                                              "dapiPublic": f"{rest.base}/dapi/v1", "ws": ws.urls()}},
                             "options": {"watchTrades": {"name": "aggTrade"}}, "enableRateLimit": False},
        )
        holder.append(feed)
        feed.heartbeat = stop_when(lambda f: f.pipeline.bars_stored >= len(want), holder)
        feed.run()
    # binance has a COIN-M forceOrder stream, so the feed subscribed to it; the replay has no liquidations for
    # that day (none were recorded), so the feed saw none: 0.0, not NaN.
    assert feed.has_liquidations
    assert_bars_equal(stored_bars(inst), want.assign(liq_long_volume=0.0, liq_short_volume=0.0))
    secs = feed.last_batch_done_at - feed.first_batch_at
    with capsys.disabled():
        print(f"\nlive feed, local websocket -> ccxt.pro -> pipeline -> {len(want)} bars stored: "
              f"{feed.trades_received} trades in {secs:.2f} s = {feed.trades_received / secs:,.0f} trades/s")


def test_backoff_doubles_to_its_cap_with_jitter_in_the_upper_half():
    import random

    rng = random.Random(1)
    for attempt in range(12):
        d = min(60.0, 0.5 * 2**attempt)
        samples = [backoff_delay(attempt, 0.5, 60.0, rng) for _ in range(200)]
        assert d / 2 <= min(samples) and max(samples) <= d
        assert max(samples) - min(samples) > d / 10  # jittered, not a fixed delay


def test_liquidation_sides_follow_each_exchange_convention():
    binance = {"symbol": "BTC/USDT:USDT", "side": "sell", "price": 99767.53, "contracts": 0.002,
               "timestamp": 1737996728214, "info": {"z": "0.010", "l": "0.002"}}
    liq = liquidation_from_ccxt(binance, {"contract": True, "linear": True, "contractSize": 1}, "binanceusdm")
    assert (liq.side, liq.amount, liq.price) == ("long", 0.010, 99767.53)  # forced SELL = a long; size = z
    bybit = {"side": "buy", "price": 100.0, "contracts": 2.0, "timestamp": 1, "info": {}}
    assert liquidation_from_ccxt(bybit, None, "bybit").side == "long"  # Bybit reports the position side
