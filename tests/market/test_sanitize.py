"""Sanitiser: every trade/liquidation is checked before the BarBuilder; each reason counted."""

import csv
import math

import pytest

from apps.market.bar_builder import BarBuilder, Liquidation, Trade
from apps.market.sanitize import Sanitiser
from tests.datafiles import _flush_redis, require, services_use_test_redis  # noqa: F401

T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
NOW = T0 + 60_000
REAL_TRADES = "trades/freqtrade_orderflow_public_trades_list_2023-02-02.csv"


def tr(ts: int, price: float, amount: float = 1.0, id: str = "", side: str = "buy") -> Trade:
    return Trade(ts_ms=ts, price=price, amount=amount, side=side, id=id)


def run(s: Sanitiser, trades: list[Trade], now_ms: int = NOW) -> list[str | None]:
    return [s.check_trade(t, now_ms) for t in trades]


def test_non_finite_price_or_size() -> None:
    s = Sanitiser()
    got = run(s, [tr(T0, math.nan), tr(T0, math.inf), tr(T0, 100.0, -math.inf), tr(T0, 100.0, math.nan)])
    assert got == ["non_finite"] * 4
    assert s.counts == {"non_finite": 4}
    assert s.ref_price is None and s.newest_ts is None  # nothing accepted, nothing moved


def test_non_positive_price_or_size() -> None:
    s = Sanitiser()
    assert run(s, [tr(T0, 0.0), tr(T0, -1.0), tr(T0, 100.0, 0.0), tr(T0, 100.0, -0.5), tr(T0, 100.0)]) == [
        "non_positive", "non_positive", "non_positive", "non_positive", None,
    ]
    assert s.counts == {"non_positive": 4}


def test_duplicate_id_within_memory() -> None:
    s = Sanitiser()
    got = run(s, [tr(T0, 100.0, id="a"), tr(T0 + 1, 100.0, id="b"), tr(T0 + 2, 100.0, id="a"), tr(T0 + 3, 100.0)])
    assert got == [None, None, "duplicate_id", None]
    assert run(s, [tr(T0 + 4, 100.0)]) == [None]  # trades without an id are never duplicates
    assert s.counts == {"duplicate_id": 1}


def test_a_rejected_trade_does_not_claim_its_id() -> None:
    s = Sanitiser()
    assert run(s, [tr(T0, math.nan, id="x"), tr(T0, 100.0, id="x")]) == ["non_finite", None]


def test_id_memory_is_bounded() -> None:
    s = Sanitiser(id_memory=3)
    assert run(s, [tr(T0 + i, 100.0, id=str(i)) for i in range(5)]) == [None] * 5
    assert len(s._ids) == 3 and list(s._id_order) == ["2", "3", "4"]
    assert run(s, [tr(T0 + 5, 100.0, id="4")]) == ["duplicate_id"]  # still remembered
    assert run(s, [tr(T0 + 5, 100.0, id="0")]) == [None]            # forgotten: accepted again
    assert len(s._ids) == 3 == len(s._id_order)


def test_out_of_order_beyond_tolerance() -> None:
    s = Sanitiser(reorder_tolerance_ms=2_000)
    got = run(s, [tr(T0 + 10_000, 100.0), tr(T0 + 8_000, 100.0), tr(T0 + 7_999, 100.0), tr(T0 + 11_000, 100.0),
                  tr(T0 + 8_999, 100.0)])
    assert got == [None, None, "out_of_order", None, "out_of_order"]  # the newest ACCEPTED ts moves the cut
    assert s.counts == {"out_of_order": 2} and s.newest_ts == T0 + 11_000


def test_future_beyond_tolerance() -> None:
    s = Sanitiser(future_tolerance_ms=5_000)
    assert run(s, [tr(NOW + 5_000, 100.0), tr(NOW + 5_001, 100.0)]) == [None, "future"]
    assert s.counts == {"future": 1}


def test_future_trade_does_not_make_later_trades_out_of_order() -> None:
    s = Sanitiser()
    assert run(s, [tr(T0, 100.0), tr(NOW + 3_600_000, 100.0), tr(T0 + 1, 100.0)]) == [None, "future", None]


def test_price_band_against_last_accepted_price() -> None:
    s = Sanitiser(price_band_pct=10.0)
    got = run(s, [tr(T0, 100.0), tr(T0 + 1, 110.0), tr(T0 + 2, 121.5), tr(T0 + 3, 99.0), tr(T0 + 4, 89.0)])
    # 110 is exactly +10 %: in the band and the new reference; 121.5 > 121 out; 99 = -10 % of 110 in; 89 out
    assert got == [None, None, "price_band", None, "price_band"]
    assert s.ref_price == 99.0 and s.counts == {"price_band": 2}


def test_rejected_price_never_moves_the_reference() -> None:
    s = Sanitiser(price_band_pct=10.0)
    # A bad print at 150 followed by trades near it: all still judged against 100, so all rejected.
    got = run(s, [tr(T0, 100.0), tr(T0 + 1, 150.0), tr(T0 + 2, 149.0), tr(T0 + 3, 148.0), tr(T0 + 4, 101.0)])
    assert got == [None, "price_band", "price_band", "price_band", None]
    assert s.ref_price == 101.0
    # Other rejections leave it too: a duplicate id at a far price, a NaN size.
    assert run(s, [tr(T0 + 5, 101.0, id="d"), tr(T0 + 6, 200.0, id="d"), tr(T0 + 7, 300.0, math.nan)]) == [
        None, "duplicate_id", "non_finite",
    ]
    assert s.ref_price == 101.0


def test_counts_accumulate_per_reason() -> None:
    s = Sanitiser()
    run(s, [tr(T0, 100.0, id="1"), tr(T0, math.nan), tr(T0, -1.0), tr(T0, 100.0, id="1"), tr(T0 + 1, 100.0, id="1"),
            tr(NOW + 10_000, 100.0), tr(T0, 200.0)])
    assert s.counts == {"non_finite": 1, "non_positive": 1, "duplicate_id": 2, "future": 1, "price_band": 1}


def test_liquidations() -> None:
    s = Sanitiser()
    liq = [
        Liquidation(ts_ms=T0 + 10_000, side="long", price=100.0, amount=1.0),
        Liquidation(ts_ms=T0 + 10_000, side="long", price=math.nan, amount=1.0),
        Liquidation(ts_ms=T0 + 10_000, side="short", price=100.0, amount=0.0),
        Liquidation(ts_ms=NOW + 6_000, side="short", price=100.0, amount=1.0),
        Liquidation(ts_ms=T0, side="short", price=100.0, amount=1.0),
        Liquidation(ts_ms=T0 + 11_000, side="short", price=300.0, amount=1.0),  # no price band for liquidations
    ]
    assert [s.check_liquidation(x, NOW) for x in liq] == [
        None, "non_finite", "non_positive", "future", "out_of_order", None,
    ]
    assert s.ref_price is None and s.newest_ts is None  # the trade stream's state is untouched


def test_bad_constructor_args() -> None:
    for kw in ({"price_band_pct": 0}, {"price_band_pct": math.nan}, {"future_tolerance_ms": -1},
               {"reorder_tolerance_ms": -1}, {"id_memory": 0}):
        with pytest.raises(ValueError):
            Sanitiser(**kw)


def _real_trades() -> list[Trade]:
    with open(require(REAL_TRADES), newline="") as f:
        return [
            Trade(ts_ms=int(r["timestamp"]), price=float(r["price"]), amount=float(r["amount"]), side=r["side"],
                  id=r["id"])
            for r in csv.DictReader(f)
        ]


def test_real_trades_pass_and_only_injected_rows_are_rejected() -> None:
    real = _real_trades()
    assert len(real) == 1000
    now = real[-1].ts_ms
    stream: list[tuple[Trade, str | None]] = []
    for i, t in enumerate(real):
        stream.append((t, None))
        if i == 100:
            stream.append((tr(t.ts_ms, math.nan, 0.1, id="bad-nan"), "non_finite"))
        elif i == 200:
            stream.append((tr(t.ts_ms, t.price, -0.5, id="bad-neg"), "non_positive"))
        elif i == 300:
            stream.append((t, "duplicate_id"))  # the same trade again (REST/websocket overlap)
        elif i == 400:
            stream.append((tr(t.ts_ms, t.price * 1.5, 0.1, id="bad-jump"), "price_band"))
        elif i == 500:
            stream.append((tr(now + 86_400_000, t.price, 0.1, id="bad-future"), "future"))
    s = Sanitiser()
    b = BarBuilder()
    accepted, bars = [], []
    for t, expected in stream:
        got = s.check_trade(t, now)
        assert got == expected, (t, expected, got)
        if got is None:
            accepted.append(t)
            bars += b.add_trade(t)
    assert accepted == real
    assert s.counts == {"non_finite": 1, "non_positive": 1, "duplicate_id": 1, "price_band": 1, "future": 1}
    assert b.rejected == {} and b.duplicates == 0 and b.late_trades == 0  # nothing bad reached the builder
    bars += b.flush(now + 60_000)
    assert sum(x["trades"] for x in bars) == 1000


def test_a_real_lasting_move_beyond_the_band_reanchors_instead_of_locking_the_feed_out():
    s = Sanitiser(price_band_pct=10.0, reanchor_after=5)
    assert s.check_trade(Trade(ts_ms=1_000, price=100.0, amount=1.0, side="buy", id="a"), now_ms=10_000) is None
    reasons = [s.check_trade(Trade(ts_ms=1_000 + i, price=120.0, amount=1.0, side="buy", id=f"b{i}"),
                             now_ms=10_000) for i in range(6)]
    assert reasons == ["price_band"] * 4 + [None, None]
    assert s.ref_price == 120.0 and s.counts == {"price_band": 4, "reanchored": 1}


def test_bad_side_and_bad_time() -> None:
    s = Sanitiser()
    got = run(s, [tr(T0, 100.0, side="hold"), tr(-1, 100.0), tr(0, 100.0), Trade(float(T0), 100.0, 1.0, "buy", ""),
                  Trade(T0, "100", 1.0, "buy", ""), Trade(T0, None, 1.0, "buy", ""), Trade(T0, True, 1.0, "buy", "")])
    assert got == ["bad_side", "bad_time", "bad_time", "bad_time", "non_finite", "non_finite", "non_finite"]
    assert s.ref_price is None
    liq = [Liquidation(ts_ms=T0, side="sell", price=100.0, amount=1.0),
           Liquidation(ts_ms=-1, side="long", price=100.0, amount=1.0)]
    assert [s.check_liquidation(x, NOW) for x in liq] == ["bad_side", "bad_time"]


def _candle(minute: int, o: float = 100.0, h: float = 101.0, lo: float = 99.0, c: float = 100.5,
            v: float = 10.0, buy: float | None = 4.0) -> dict:
    from datetime import UTC, datetime

    return {"open_time": datetime.fromtimestamp((T0 + minute * 60_000) / 1000, tz=UTC), "open": o, "high": h,
            "low": lo, "close": c, "volume": v, "taker_buy_volume": buy}


def test_check_candle_rejects_each_kind_of_bad_bar() -> None:
    from datetime import datetime

    s = Sanitiser(price_band_pct=10.0)
    now = T0 + 100 * 60_000
    cases = [
        (_candle(0), None),
        (_candle(1, o=math.nan), "non_finite"),
        (_candle(1, v=math.inf), "non_finite"),
        (_candle(1, lo=0.0), "non_positive"),
        (_candle(1, c=-5.0), "non_positive"),
        ({**_candle(1), "open_time": datetime(2025, 1, 1, 0, 1)}, "bad_time"),   # naive: not UTC data
        (_candle(1, v=-1.0, buy=None), "negative_volume"),
        (_candle(1, v=1.0, buy=2.0), "taker_buy_gt_volume"),
        (_candle(1, h=98.0, lo=99.0, o=98.5, c=98.5), "high_below_low"),
        (_candle(1, o=102.0), "open_close_outside_range"),
        (_candle(1, c=98.0), "open_close_outside_range"),
        (_candle(100), "future"),                                                  # closes at now + 60 s
        (_candle(0), "duplicate_bar"),
        (_candle(1, o=150.0, h=151.0, lo=149.0, c=150.0), "price_band"),
        (_candle(1, h=1e9), "price_band"),                                         # an absurd wick
        (_candle(1, v=0.0, buy=math.nan), None),                                   # quiet bar, taker split unknown
        (_candle(0), "out_of_order"),
        (_candle(99), None),                                                       # closes exactly at now
    ]
    for bar, expected in cases:
        assert s.check_candle(bar, now) == expected, (bar, expected)
    assert sum(s.counts.values()) == sum(1 for _, e in cases if e)
    assert s.candle_ref == 100.5 and s.ref_price is None   # the trade stream's reference is untouched


def test_check_candle_reanchors_after_a_lasting_move() -> None:
    s = Sanitiser(price_band_pct=10.0, reanchor_after=3)
    now = T0 + 100 * 60_000
    assert s.check_candle(_candle(0), now) is None
    got = [s.check_candle(_candle(i, o=130.0, h=131.0, lo=129.0, c=130.0), now) for i in range(1, 5)]
    assert got == ["price_band", "price_band", None, None] and s.counts["reanchored"] == 1
