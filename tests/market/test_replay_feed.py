"""Replay feed: real recorded files (and stored history) through the same FeedPipeline as live.

Run with a private RUN_DIR: `RUN_DIR=/tmp/run-replay .venv/bin/pytest tests/market/test_replay_feed.py`.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.market.bar_builder import BarBuilder, Trade
from apps.market.models import Candle, FeedStatus
from apps.market.replay_feed import ReplayError, parse_source, replay_label
from apps.market.sanitize import Sanitiser
from apps.runtime.tasks import feed_source_runner, run_feed
from apps.trading.models import Position
from tests.datafiles import require
from tests.factories import make_candles, make_feed, make_ghost, make_instrument, make_position

AGG_DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
KLINES = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-01.zip"
KLINE_COLS = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
              "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
M = 60_000


def always() -> bool:
    return True


def _bars(instrument) -> pd.DataFrame:
    rows = Candle.objects.filter(instrument=instrument).order_by("open_time").values(
        "open_time", "open", "high", "low", "close", "volume", "taker_buy_volume", "trade_count")
    df = pd.DataFrame(list(rows))
    for c in df.columns[1:]:
        df[c] = df[c].astype("float64")
    return df


def test_parse_source() -> None:
    assert parse_source("replay:a.zip").speed is None
    assert parse_source("replay:a.zip@120").speed == 120.0
    assert parse_source("replay:a.zip@max").speed == 0.0 and parse_source("replay:a.zip@0").speed == 0.0
    spec = parse_source("replay:trades/x.zip, liquidations/y.csv@60")
    assert spec.targets == ("trades/x.zip", "liquidations/y.csv") and spec.label == "x.zip, y.csv @60"
    assert parse_source("replay:db:binance:BTC/USDT:USDT@10").targets == ("db:binance:BTC/USDT:USDT",)
    for bad in ("replay:", "replay:a.zip@fast", "replay:a.zip@-3", "sim"):
        with pytest.raises(ReplayError):
            parse_source(bad)
    assert replay_label("replay:klines/BTCUSDT-1m-2020-01-01.zip@max") == "REPLAY BTCUSDT-1m-2020-01-01.zip @max"


@pytest.mark.django_db
def test_aggtrades_day_replay_stores_the_pure_builders_bars_and_checks_stops() -> None:
    """The real COIN-M day at full speed stores exactly the bars of the pure Sanitiser + BarBuilder path,
    and a paper position's stop/target is checked on every replayed trade (closed at the first crossing)."""
    path = require(AGG_DAY)
    inst = make_instrument(code="binancecoinm", symbol="BTC/USD")
    make_feed(instrument=inst, source=f"replay:{AGG_DAY}@max", last_price=None)
    raw = pd.read_csv(path)
    base = raw.quantity * 100.0 / raw.price
    # a long opened before the data at the first trade's price: stop -1 %, target +0.8 % (factory levels)
    first = float(raw.price.iloc[0])
    ghost = make_ghost(name="g", instrument=inst)
    pos = make_position(ghost=ghost, opened_at=datetime(2026, 5, 7, 23, 59, tzinfo=UTC), entry=f"{first:.1f}")
    stop, target = float(pos.stop), float(pos.target)
    calls = []
    feed = feed_source_runner(f"replay:{AGG_DAY}@max", inst, on_bar=calls.append, heartbeat=always)
    feed.run()

    # the pure path, written out here on the raw CSV columns
    s, b, expected = Sanitiser(), BarBuilder(whale_notional=float(inst.whale_notional)), []
    for ts, p, a, buy_maker, i in zip(raw.transact_time.tolist(), raw.price.tolist(), base.tolist(),
                                      raw.is_buyer_maker.tolist(), raw.agg_trade_id.tolist(), strict=True):
        t = Trade(ts, p, a, "sell" if buy_maker else "buy", str(i))
        if s.check_trade(t, ts) is None:
            expected += b.add_trade(t)
    expected += b.flush(int(raw.transact_time.max()) + 2 * M)
    want = pd.DataFrame(expected)
    got = _bars(inst)
    assert len(got) == len(want) == 1437 and feed.pipeline.bars_stored == 1437
    assert got.open_time.tolist() == want.open_time.tolist()
    for c in ("open", "high", "low", "close"):
        assert np.allclose(got[c], want[c], rtol=0, atol=1e-9)
    assert np.allclose(got.volume, want.volume, rtol=1e-9)
    assert got.trade_count.tolist() == want.trades.tolist() and got.trade_count.sum() == len(raw)

    pos.refresh_from_db()
    hit = raw[(raw.price <= stop) | (raw.price >= target)].iloc[0]
    assert pos.status == Position.Status.CLOSED
    assert pos.closed_at == datetime.fromtimestamp(hit.transact_time / 1000, tz=UTC)
    assert pos.exit_reason == ("stop" if hit.price <= stop else "target")
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.bars_stored == 1437 and fs.last_price is not None and fs.rejected == {}


@pytest.mark.django_db
def test_kline_replay_stores_the_real_bars_calls_ghosts_in_order_and_checks_stops(
        django_capture_on_commit_callbacks) -> None:
    path = require(KLINES)
    k = pd.read_csv(path, header=None, names=KLINE_COLS)
    k["t"] = pd.to_datetime(k.open_time, unit="ms", utc=True)
    inst = make_instrument()
    make_feed(instrument=inst, source=f"replay:{KLINES}@max", last_price=None)
    entry = float(k.open.iloc[0])
    pos = make_position(ghost=make_ghost(name="g", instrument=inst), opened_at=k.t.iloc[0].to_pydatetime(),
                        side="short", entry=f"{entry:.2f}")
    # tighter levels than the factory's (+1 % / -0.8 %), which that quiet day never reaches
    Position.objects.filter(pk=pos.pk).update(stop=Decimal(f"{entry * 1.003:.2f}"),
                                              target=Decimal(f"{entry * 0.998:.2f}"))
    pos.refresh_from_db()
    stop, target = float(pos.stop), float(pos.target)
    seen = []
    with django_capture_on_commit_callbacks(execute=True):
        feed_source_runner(f"replay:{KLINES}@max", inst, on_bar=lambda c: seen.append(c.open_time),
                   heartbeat=always).run()
    got = _bars(inst)
    assert len(got) == 1440 and got.open_time.tolist() == k.t.tolist()          # nothing synthesised
    for c in ("open", "high", "low", "close", "volume", "taker_buy_volume"):
        assert np.allclose(got[c], k[c], rtol=1e-12), c
    assert got.trade_count.tolist() == k["count"].tolist()
    assert seen == k.t.tolist()                                                  # every bar, in data order

    # independent of bar_exit: the first bar whose open/high reaches the stop or open/low the target
    pos.refresh_from_db()
    idx = np.flatnonzero((k.high >= stop) | (k.low <= target))
    bar = k.iloc[idx[0]]
    assert pos.status == Position.Status.CLOSED
    assert pos.closed_at == (bar.t + timedelta(milliseconds=M - 1)).to_pydatetime()
    assert pos.exit_reason == ("stop" if bar.high >= stop else "target")   # both in one bar: the stop


@pytest.mark.django_db
def test_db_replay_copies_stored_history_and_resumes_without_rewriting() -> None:
    src = make_instrument(symbol="ETH/USDT")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    make_candles(instrument=src, start=start, n=30)
    dst = make_instrument(symbol="DEMO/USDT")
    make_feed(instrument=dst, source="replay:db:binance:ETH/USDT@max", last_price=None)
    calls = []
    feed_source_runner("replay:db:binance:ETH/USDT@max", dst, on_bar=calls.append, heartbeat=always).run()
    a, b = _bars(src), _bars(dst)
    assert len(b) == 30 and a.drop(columns=[]).equals(b)
    # a restart (the worker died) resumes after the last stored bar: nothing stored twice, nothing re-sent
    Candle.objects.filter(instrument=dst, open_time__gte=start + timedelta(minutes=20)).delete()
    feed = feed_source_runner("replay:db:binance:ETH/USDT@max", dst, on_bar=None, heartbeat=always)
    feed.run()
    assert feed.pipeline.bars_stored == 10 and _bars(dst).equals(a)
    with pytest.raises(ReplayError, match="no stored instrument"):
        feed_source_runner("replay:db:binance:NOPE/USDT", dst, on_bar=None, heartbeat=always)


@pytest.mark.django_db
def test_paced_replay_follows_data_time_and_stops_on_heartbeat_loss() -> None:
    require(KLINES)
    inst = make_instrument()
    make_feed(instrument=inst, source=f"replay:{KLINES}@600", last_price=None)
    # 600 data seconds per wall second for ~1 s: about 10 minutes of bars, certainly not the whole day
    feed_source_runner(f"replay:{KLINES}@600", inst, on_bar=None, heartbeat=always, max_seconds=1.0).run()
    n = Candle.objects.filter(instrument=inst).count()
    assert 3 <= n <= 40
    # the lock is lost (another runner took over): the replay stops at its next step, storing nothing more
    beats = iter([True] * 3)
    feed = feed_source_runner(f"replay:{KLINES}@600", inst, on_bar=None, heartbeat=lambda: next(beats, False))
    feed.run()
    assert feed.pipeline.bars_stored <= 3 and Candle.objects.filter(instrument=inst).count() <= n + 3
    # started again at full speed it resumes after the last stored bar: the rest of the day, nothing twice
    feed = feed_source_runner(f"replay:{KLINES}@max", inst, on_bar=None, heartbeat=always)
    before = Candle.objects.filter(instrument=inst).count()
    feed.run()
    assert feed.pipeline.bars_stored == 1440 - before and Candle.objects.filter(instrument=inst).count() == 1440


@pytest.mark.django_db
def test_bad_replay_sources_are_visible_feed_errors(tmp_path, desk) -> None:
    inst = desk["instrument"]
    FeedStatus.objects.filter(instrument=inst).update(source="replay:no/such/file.zip@max")
    assert run_feed(inst.pk, max_seconds=5).startswith("error")
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.state == FeedStatus.State.ERROR and "replay file not found: no/such/file.zip" in fs.last_error
    junk = tmp_path / "notes.csv"
    junk.write_text("hello,world\n1,2\n")
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{junk}")
    run_feed(inst.pk, max_seconds=5)
    assert "unknown replay format" in FeedStatus.objects.get(instrument=inst).last_error
    assert not Candle.objects.filter(instrument=inst).exists()


@pytest.mark.django_db
def test_replay_of_a_file_with_bad_rows_counts_them_per_reason(tmp_path) -> None:
    """Real aggTrades rows with injected bad ones: each bad row is counted on the feed, none reaches a bar."""
    raw = pd.read_csv(require(AGG_DAY), nrows=3000)
    bad = raw.iloc[[10, 20, 30, 40]].copy()
    bad["agg_trade_id"] = [1, 2, 3, 4]
    bad["transact_time"] = raw.transact_time.iloc[999]  # arriving in order, so each fails for its own reason
    bad.iloc[0, bad.columns.get_loc("price")] = np.nan
    bad.iloc[1, bad.columns.get_loc("quantity")] = -5
    bad.iloc[2, bad.columns.get_loc("price")] = raw.price.iloc[30] * 50          # absurd print
    bad.iloc[3, bad.columns.get_loc("transact_time")] = raw.transact_time.iloc[999] + 86_400_000  # future
    mixed = pd.concat([raw.iloc[:1000], bad, raw.iloc[1000:], raw.iloc[[500]]], ignore_index=True)  # + a dup
    f = tmp_path / "BTCUSD_PERP-aggTrades-2026-05-08.csv"
    mixed.to_csv(f, index=False)
    inst = make_instrument(code="binancecoinm", symbol="BTC/USD")
    make_feed(instrument=inst, source=f"replay:{f}@max", last_price=None)
    feed_source_runner(f"replay:{f}@max", inst, on_bar=None, heartbeat=always).run()
    fs = FeedStatus.objects.get(instrument=inst)
    assert fs.rejected == {"non_finite": 1, "non_positive": 1, "price_band": 1, "future": 1, "duplicate_id": 1}
    got = _bars(inst)
    assert got.trade_count.sum() == 3000 and got.high.max() <= raw.price.max() and got.low.min() >= raw.price.min()
    assert Decimal(str(got.high.max())) > 0


def test_source_badges() -> None:
    from apps.dashboard.templatetags.desk import rejected_summary, source_label

    assert source_label("sim") == "SIM"
    assert source_label("replay:klines/x/BTCUSDT-1m-2020-01-01.zip@max") == "REPLAY BTCUSDT-1m-2020-01-01.zip @max"
    assert source_label("replay:a/t.zip,b/l.csv@60") == "REPLAY t.zip, l.csv @60"
    assert source_label("replay:db:binance:BTC/USDT") == "REPLAY db:binance:BTC/USDT"
    assert source_label("live", "Binance") == "LIVE Binance" and source_label("live") == "LIVE"
    assert rejected_summary({"future": 1, "price_band": 3, "x": 0}) == "price_band 3 · future 1"
    assert rejected_summary({}) == ""


@pytest.mark.django_db
def test_overview_marks_the_replay_and_shows_rejections_per_reason(op_client, desk) -> None:
    make_feed(instrument=desk["instrument"], source="replay:trades/BTCUSD_PERP-aggTrades-2026-05-08.zip@120",
              rejected={"price_band": 2, "non_finite": 5})
    html = op_client.get("/").content.decode()
    assert ">REPLAY BTCUSD_PERP-aggTrades-2026-05-08.zip @120<" in html
    assert "rejected: <span class=\"num\">non_finite 5 · price_band 2</span>" in html
