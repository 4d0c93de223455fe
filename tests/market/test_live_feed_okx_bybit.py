"""The live feed (apps/market/live_feed.py) for OKX and Bybit, offline, through ccxt.pro 4.5.90's real code.

Boundary: the REAL ccxt.pro okx / bybit classes (market loading and parsing, subscription, `handle_message`
routing, `handle_trades`, `handle_liquidation`, reconnect) against LOCAL servers on 127.0.0.1
(tests/fakes/okx_bybit_ws.py): a `websockets` server speaking OKX v5 / Bybit v5 public stream protocol
and a stdlib HTTP server serving the instruments endpoints (markets are loaded over REST by ccxt itself,
not pre-set with `set_markets`). LiveFeed runs in-process on the test database with its real FeedPipeline.

THE DATA IS NOT OKX OR BYBIT DATA. No OKX or Bybit recording exists in ../shared/data. The trades and
liquidations below are REAL BINANCE prints (the freqtrade ETH/USDT spot trade list of 2023-02-02, the USDT-M
BTCUSDT >= 15k USD aggTrades and forceOrders of 2025-01-27), RE-ENCODED in each exchange's message format:
OKX swap sizes converted to contracts of 0.01 BTC, Bybit liquidations given Bybit's POSITION-side `S`. They
test the wiring and the unit/side conventions, not OKX/Bybit market behaviour.

Expected bars come from an independent pandas groupby of the same rows (tests/market/test_live_feed.py
`expected_bars`).
"""

from decimal import Decimal

import pandas as pd
import pytest

from apps.market.live_feed import LiveFeed
from apps.market.models import FeedStatus
from apps.runtime.pipeline import pipeline_factory
from tests.fakes.binance_ws import LocalHttp
from tests.fakes.okx_bybit_ws import (
    FakeVenueWs,
    bybit_instruments,
    bybit_liquidation_message,
    bybit_trades_message,
    okx_instruments,
    okx_liquidation_message,
    okx_trades_message,
)
from tests.market.test_live_feed import (
    ReceivedClock,
    assert_bars_equal,
    btc_force_orders,
    expected_bars,
    freqtrade_trades,
    large_usdm_btc,
    make_instrument,
    state_names,
    stop_when,
    stored_bars,
)

pytestmark = pytest.mark.django_db(transaction=True)

OKX_CT_VAL = Decimal("0.01")  # BTC per BTC-USDT-SWAP contract (okx_instruments)
CASCADE = (1737996720000, 1737997740000)  # 2025-01-27 16:52 .. 17:09 UTC: a real BTC liquidation cascade


@pytest.fixture(autouse=True)
def _offline(no_internet):
    """Every test here must stay on 127.0.0.1 (tests/conftest.py `no_internet`)."""


# ------------------------------------------------------------------ real Binance rows, re-encoded


def spot_rows() -> list[dict]:
    """The 1000 real freqtrade ETH/USDT trades as {id, ts_ms, price, size [base], side [taker]}."""
    return [{"id": r["id"], "ts_ms": int(r["timestamp"]), "price": r["price"], "size": r["amount"],
             "side": r["side"]} for r in freqtrade_trades()]


def cascade_rows() -> tuple[list[dict], list[dict]]:
    """Real USDT-M BTCUSDT trades (unique agg ids) and forceOrders (recorder duplicates removed) of the cascade.
    Liquidation `position` is the liquidated side: a forced SELL closes a long."""
    trades, seen = [], set()
    for r in large_usdm_btc(*CASCADE):
        if r[2] in seen:
            continue
        seen.add(r[2])
        trades.append({"id": r[2], "ts_ms": int(r[5]), "price": r[3], "size": r[4],
                       "side": "sell" if r[6] == "True" else "buy"})
    liqs, keys = [], set()
    for r in btc_force_orders(*CASCADE):
        key = (r[10], r[1], r[6], r[9])
        if key in keys:
            continue
        keys.add(key)
        liqs.append({"ts_ms": int(r[10]), "position": "long" if r[1] == "SELL" else "short", "price": r[6],
                     "size": r[9]})
    return trades, liqs


def batches(rows: list[dict]) -> list[list[dict]]:
    """Trades of the same millisecond in one push, as the exchanges batch them."""
    out: list[list[dict]] = []
    for r in rows:
        if out and out[-1][0]["ts_ms"] == r["ts_ms"]:
            out[-1].append(r)
        else:
            out.append([r])
    return out


def trades_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"ts_ms": [r["ts_ms"] for r in rows], "price": [float(r["price"]) for r in rows],
                         "amount": [float(r["size"]) for r in rows], "side": [r["side"] for r in rows]})


def liqs_frame(liqs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"ts_ms": [x["ts_ms"] for x in liqs], "side": [x["position"] for x in liqs],
                         "amount": [float(x["size"]) for x in liqs]})


def okx_rest(q: dict) -> tuple[int, dict]:
    """GET /api/v5/public/instruments: ccxt's default fetchMarkets types ask for SPOT, FUTURES, SWAP and
    OPTION (twice, per underlying); only SPOT ETH-USDT and SWAP BTC-USDT-SWAP exist here."""
    kind = q.get("instType")
    ids = {"SPOT": ("ETH-USDT", "BTC-USDT"), "SWAP": ("BTC-USDT-SWAP",)}.get(kind, ())
    return 200, okx_instruments(kind, *ids)


def bybit_rest(q: dict) -> tuple[int, dict]:
    pairs = {"spot": [("ETH", "USDT"), ("BTC", "USDT")], "linear": [("BTC", "USDT")]}.get(q.get("category"), [])
    return 200, bybit_instruments(q.get("category"), *pairs)


# Trades and liquidations come on two streams that ccxt's tasks hand over separately; the test clock is the newest
# received minus 4 s of data (the sanitiser refuses events more than 5 s ahead of it). At this pace 4 s of data is
# 100 ms of wall time for one stream's task to lag the other's before its event counts as late: at 100x (40 ms) a
# liquidation was once counted late at load ~7, and its bar came out short of it.
LIQ_SPEED = 40


def run_feed(inst, config: dict, first_ms: int, total: int, n_bars: int, lag_ms: int = 0,
             until_lagging: bool = False) -> LiveFeed:
    holder: list[LiveFeed] = []
    feed = LiveFeed(inst, make_pipeline=pipeline_factory(inst),
                    max_seconds=45, heartbeat=lambda: True, network_backoff=(0.2, 2.0),
                    clock_ms=ReceivedClock(holder, first_ms, total=total, lag_ms=lag_ms),
                    exchange_config={**config, "enableRateLimit": False})
    holder.append(feed)
    feed.heartbeat = stop_when(lambda f: f.pipeline.bars_stored >= n_bars and (
        not until_lagging or state_names(f)[-1] == FeedStatus.State.LAGGING), holder)
    feed.run()
    return feed


def assert_one_reconnect(feed: LiveFeed) -> None:
    names = state_names(feed)
    i = names.index(FeedStatus.State.RECONNECTING)
    _, error, retry_at = feed.transitions[i]
    assert "NetworkError" in error and "closing code 1000" in error and retry_at is not None
    assert FeedStatus.State.CONNECTED in names[i + 1:]
    assert names.count(FeedStatus.State.RECONNECTING) == 1


# ------------------------------------------------------------------ OKX


def test_okx_spot_trades_with_a_disconnect_store_exactly_the_groupby_bars():
    rows = spot_rows()
    inst = make_instrument("okx", "ETH/USDT", whale_notional="20000")
    want = expected_bars(trades_frame(rows), whale_notional=20_000)
    msgs = [(b[0]["ts_ms"], okx_trades_message("ETH-USDT", b)) for b in batches(rows)]
    with (LocalHttp({"/api/v5/public/instruments": okx_rest}) as rest,
          FakeVenueWs("okx", {"trades:ETH-USDT": msgs}) as ws):
        ws.drop_after = 300
        feed = run_feed(inst, {"urls": {"api": {"rest": rest.base, "ws": f"{ws.base}/ws/v5"}}},
                        rows[0]["ts_ms"] - 1, total=len(rows), n_bars=len(want), until_lagging=True)
    assert not feed.has_liquidations  # spot: no liquidation stream
    assert_bars_equal(stored_bars(inst), want)
    assert_one_reconnect(feed)
    assert ws.drops == 1 and feed.trades_received == len(rows) and feed.pipeline.counts() == {}
    subs = [(p, m) for p, m in ws.received if isinstance(m, dict) and m.get("op") == "subscribe"]
    assert subs == [("/ws/v5/public", {"op": "subscribe", "args": [{"channel": "trades", "instId": "ETH-USDT"}]})] * 2
    # markets were loaded by ccxt over REST (one request per instType of its default fetchMarkets types)
    assert sorted({p.split("instType=")[1].split("&")[0] for p in rest.requests}) == ["FUTURES", "OPTION", "SPOT",
                                                                                      "SWAP"]


def test_okx_swap_contracts_and_liquidation_orders_land_in_their_minutes():
    trades, liqs = cascade_rows()
    assert len(trades) > 500 and len(liqs) > 20
    inst = make_instrument("okx", "BTC/USDT:USDT")
    want = expected_bars(trades_frame(trades), whale_notional=100_000, liqs=liqs_frame(liqs))

    def contracts(size: str) -> str:  # base units -> OKX contracts of 0.01 BTC
        return str(Decimal(size) / OKX_CT_VAL)

    tmsgs = [(b[0]["ts_ms"], okx_trades_message("BTC-USDT-SWAP", [{**r, "size": contracts(r["size"])} for r in b]))
             for b in batches(trades)]
    lmsgs = [(x["ts_ms"], okx_liquidation_message("BTC-USDT-SWAP", x["ts_ms"],
                                                  "sell" if x["position"] == "long" else "buy", x["price"],
                                                  contracts(x["size"]))) for x in liqs]
    streams = {"trades:BTC-USDT-SWAP": tmsgs, "liquidation-orders:SWAP": lmsgs}
    with (LocalHttp({"/api/v5/public/instruments": okx_rest}) as rest,
          FakeVenueWs("okx", streams, speed=LIQ_SPEED) as ws):
        feed = run_feed(inst, {"urls": {"api": {"rest": rest.base, "ws": f"{ws.base}/ws/v5"}}},
                        CASCADE[0], total=len(trades), n_bars=len(want), lag_ms=4000)
    assert feed.has_liquidations
    got = stored_bars(inst)
    assert_bars_equal(got, want)  # volumes in BTC: contracts x ctVal, for trades and liquidations alike
    assert got.liq_long_volume.sum() > 0 and got.liq_short_volume.sum() > 0  # both sides mapped, not one
    args = sorted(a["channel"] for p, m in ws.received if isinstance(m, dict) and m.get("op") == "subscribe"
                  for a in m["args"])
    assert args == ["liquidation-orders", "trades"]
    assert feed.pipeline.counts() == {} and not feed.pipeline.builder.late_liquidations


# ------------------------------------------------------------------ Bybit


def test_bybit_spot_trades_with_a_disconnect_store_exactly_the_groupby_bars():
    rows = spot_rows()
    inst = make_instrument("bybit", "ETH/USDT", whale_notional="20000")
    want = expected_bars(trades_frame(rows), whale_notional=20_000)
    msgs = [(b[0]["ts_ms"], bybit_trades_message("ETHUSDT", b, linear=False)) for b in batches(rows)]
    with (LocalHttp({"/v5/market/instruments-info": bybit_rest}) as rest,
          FakeVenueWs("bybit", {"publicTrade.ETHUSDT": msgs}) as ws):
        ws.drop_after = 300
        urls = {"public": rest.base, "ws": {"public": {"spot": f"{ws.base}/v5/public/spot",
                                                       "linear": f"{ws.base}/v5/public/linear"}}}
        feed = run_feed(inst, {"urls": {"api": urls}}, rows[0]["ts_ms"] - 1, total=len(rows), n_bars=len(want),
                        until_lagging=True)
    assert not feed.has_liquidations
    assert_bars_equal(stored_bars(inst), want)
    assert_one_reconnect(feed)
    assert ws.drops == 1 and feed.trades_received == len(rows) and feed.pipeline.counts() == {}
    subs = [(p, m["args"]) for p, m in ws.received if isinstance(m, dict) and m.get("op") == "subscribe"]
    assert subs == [("/v5/public/spot", ["publicTrade.ETHUSDT"])] * 2


def test_bybit_linear_all_liquidation_position_side_goes_to_the_right_bar_column():
    trades, liqs = cascade_rows()
    inst = make_instrument("bybit", "BTC/USDT:USDT")
    want = expected_bars(trades_frame(trades), whale_notional=100_000, liqs=liqs_frame(liqs))
    tmsgs = [(b[0]["ts_ms"], bybit_trades_message("BTCUSDT", b, linear=True)) for b in batches(trades)]
    lmsgs = [(x["ts_ms"], bybit_liquidation_message("BTCUSDT", x["ts_ms"], x["position"], x["price"], x["size"]))
             for x in liqs]
    streams = {"publicTrade.BTCUSDT": tmsgs, "allLiquidation.BTCUSDT": lmsgs}
    with (LocalHttp({"/v5/market/instruments-info": bybit_rest}) as rest,
          FakeVenueWs("bybit", streams, speed=LIQ_SPEED) as ws):
        urls = {"public": rest.base, "ws": {"public": {"spot": f"{ws.base}/v5/public/spot",
                                                       "linear": f"{ws.base}/v5/public/linear"}}}
        feed = run_feed(inst, {"urls": {"api": urls}}, CASCADE[0], total=len(trades), n_bars=len(want),
                        lag_ms=4000)
    assert feed.has_liquidations
    got = stored_bars(inst)
    assert_bars_equal(got, want)
    # The wire said S="Buy" for every long liquidated (Bybit's position-side convention): had it been read
    # as Binance's forced-order side, those volumes would sit in liq_short_volume and the equality above fails.
    # (Liquidations in a minute without trades have no bar to land in: only minutes with a bar count.)
    minutes = {int(t.timestamp() * 1000) for t in got.index}
    in_bars = [x for x in liqs if x["ts_ms"] // 60_000 * 60_000 in minutes]
    longs = sum(float(x["size"]) for x in in_bars if x["position"] == "long")
    shorts = sum(float(x["size"]) for x in in_bars if x["position"] == "short")
    assert longs > 0 and shorts > 0
    assert got.liq_long_volume.sum() == pytest.approx(longs) and got.liq_short_volume.sum() == pytest.approx(shorts)
    subs = sorted(a for p, m in ws.received if isinstance(m, dict) and m.get("op") == "subscribe"
                  for a in m["args"] if p == "/v5/public/linear")
    assert subs == ["allLiquidation.BTCUSDT", "publicTrade.BTCUSDT"]
    assert feed.pipeline.counts() == {} and not feed.pipeline.builder.late_liquidations
