"""Property tests (hypothesis): random streams mixing good and bad values through the pure path of
FeedPipeline.consume (Sanitiser -> BarBuilder, in the same order); no bad value ever reaches a bar.

The good stream is a random walk of well-formed trades (steps of at most 0.5 %, time moving forward, unique
ids); after any good trade, up to three bad items are injected, each of a known kind. Bad price prints come
in runs shorter than the sanitiser's `reanchor_after` (20): by design a longer run is read as the market
having moved (see apps.market.sanitize), so "never reaches a bar" is claimed for shorter runs only.
"""

import math
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.market.bar_builder import BarBuilder, Liquidation, Trade
from apps.market.sanitize import Sanitiser
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

T0 = 1_778_198_400_000  # 2026-05-08 00:00 UTC
FUTURE_TOL, REORDER_TOL, BAND = 5_000, 2_000, 10.0
BAD_TRADE_KINDS = ("nan_price", "inf_amount", "zero_price", "neg_amount", "bad_side", "bad_time", "dup_id",
                   "future", "out_of_order", "band_high", "band_low", "absurd", "str_price", "none_amount")
BAD_LIQ_KINDS = ("nan_amount", "neg_price", "bad_side", "future", "out_of_order")

step = st.tuples(
    st.integers(0, 20_000),                                      # ms since the previous good trade
    st.floats(-0.005, 0.005),                                    # relative price step
    st.floats(1e-6, 50.0),                                       # amount (base)
    st.sampled_from(("buy", "sell")),
    st.lists(st.sampled_from(BAD_TRADE_KINDS), max_size=3),      # bad trades injected after this one
    st.one_of(st.none(), st.tuples(st.sampled_from(("long", "short")), st.floats(1e-6, 10.0))),  # a good liq
    st.lists(st.sampled_from(BAD_LIQ_KINDS), max_size=2),
    st.floats(0.001, 100.0),                                     # how far beyond a limit a bad value lies
)


def _bad_trade(kind: str, good: list[Trade], now: int, k: float, n: int) -> Trade:
    last = good[-1]
    ref, bid = last.price, f"bad{n}"
    if kind == "dup_id":
        old = good[int(k * 7) % len(good)]
        return Trade(now, ref, 1.0, "buy", old.id)              # a good-looking trade with a seen id
    ts, price, amount, side = now, ref, 1.0, "buy"
    if kind == "nan_price":
        price = math.nan
    elif kind == "inf_amount":
        amount = math.inf
    elif kind == "zero_price":
        price = 0.0
    elif kind == "neg_amount":
        amount = -k
    elif kind == "bad_side":
        side = "BUY "
    elif kind == "bad_time":
        ts = -1
    elif kind == "future":
        ts = now + FUTURE_TOL + 1 + int(k * 1000)
    elif kind == "out_of_order":
        ts = last.ts_ms - REORDER_TOL - 1 - int(k * 1000)
    elif kind == "band_high":
        price = ref * (1 + BAND / 100 * (1 + k / 100) + 1e-9)
    elif kind == "band_low":
        price = ref * (1 - BAND / 100 * (1 + min(k, 99.0) / 100) - 1e-9) if k < 99 else ref / 1e6
    elif kind == "absurd":
        price = ref * 1_000
    elif kind == "str_price":
        price = str(ref)  # type: ignore[assignment]
    elif kind == "none_amount":
        amount = None  # type: ignore[assignment]
    return Trade(ts, price, amount, side, bid)


def _bad_liq(kind: str, now: int, newest_liq: int | None, k: float) -> Liquidation | None:
    if kind == "nan_amount":
        return Liquidation(now, "long", 100.0, math.nan)
    if kind == "neg_price":
        return Liquidation(now, "short", -k, 1.0)
    if kind == "bad_side":
        return Liquidation(now, "sell", 100.0, 1.0)
    if kind == "future":
        return Liquidation(now + FUTURE_TOL + 1 + int(k), "long", 100.0, 1.0)
    if newest_liq is None or newest_liq - REORDER_TOL - 1 <= 0:
        return None
    return Liquidation(newest_liq - REORDER_TOL - 1 - int(k), "long", 100.0, 1.0)


def _build(steps):
    """(arrival list of (kind, item, now_ms, is_good), good trades, good liquidations)."""
    arrivals, good, good_liqs = [], [], []
    ts, price, newest_liq, n = T0, 80_000.0, None, 0
    for dt, r, amount, side, bad, liq, bad_liqs, k in steps:
        ts, price = ts + dt, price * (1 + r)
        t = Trade(ts, price, amount, side, f"g{len(good)}")
        good.append(t)
        arrivals.append(("trade", t, ts, True))
        if liq is not None:
            lq = Liquidation(ts, liq[0], price * 0.99, liq[1])
            good_liqs.append(lq)
            newest_liq = ts
            arrivals.append(("liq", lq, ts, True))
        for kind in bad:
            n += 1
            arrivals.append(("trade", _bad_trade(kind, good, ts, k, n), ts, False))
        for kind in bad_liqs:
            bl = _bad_liq(kind, ts, newest_liq, k)
            if bl is not None:
                arrivals.append(("liq", bl, ts, False))
    return arrivals, good, good_liqs


def _pure_pipeline(arrivals) -> tuple[Sanitiser, BarBuilder, list[dict], list[bool]]:
    """What FeedPipeline.consume does without Django: sanitise, then aggregate what passed."""
    s = Sanitiser(price_band_pct=BAND, future_tolerance_ms=FUTURE_TOL, reorder_tolerance_ms=REORDER_TOL)
    b = BarBuilder(whale_notional=50_000.0, has_liquidations=True, whale_median_multiple=3.0)
    bars, accepted = [], []
    for kind, item, now, _ in arrivals:
        if kind == "liq":
            ok = s.check_liquidation(item, now) is None
            if ok:
                b.add_liquidation(item)
        else:
            ok = s.check_trade(item, now) is None
            if ok:
                bars += b.add_trade(item)
        accepted.append(ok)
    return s, b, bars, accepted


def _reference_bars(good: list[Trade], good_liqs: list[Liquidation]) -> list[dict]:
    """The bars of the good items alone, liquidations before the trades of their minute (as they arrive)."""
    b = BarBuilder(whale_notional=50_000.0, has_liquidations=True, whale_median_multiple=3.0)
    bars, li = [], 0
    for t in good:
        while li < len(good_liqs) and good_liqs[li].ts_ms <= t.ts_ms:
            b.add_liquidation(good_liqs[li])
            li += 1
        bars += b.add_trade(t)
    return bars + b.flush(good[-1].ts_ms + 10 * 60_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=250))
def test_no_bad_value_reaches_a_bar_and_counts_add_up(steps) -> None:
    arrivals, good, good_liqs = _build(steps)
    s, b, bars, accepted = _pure_pipeline(arrivals)
    bars += b.flush(good[-1].ts_ms + 10 * 60_000)
    # every good item passes, every bad one is stopped
    assert accepted == [is_good for *_, is_good in arrivals]
    # counts add up: accepted + rejected = input, and nothing was taken as a market move
    assert sum(accepted) + sum(s.counts.values()) == len(arrivals)
    assert "reanchored" not in s.counts
    # nothing bad got as far as the builder's own checks
    assert b.rejected == {} and b.late_trades == 0 and b.duplicates == 0 and b.late_liquidations == 0
    # the bars are exactly the bars of the good stream alone: bad values had no effect at all
    assert bars == _reference_bars(good, good_liqs)
    for bar in bars:
        nums = [v for key, v in bar.items() if key != "open_time"]
        assert all(math.isfinite(v) and v >= 0 for v in nums)
        assert 0 < bar["low"] <= min(bar["open"], bar["close"]) <= max(bar["open"], bar["close"]) <= bar["high"]


garbage_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6), st.none(), st.text(max_size=3),
    st.booleans(),
)
garbage_trade = st.builds(
    Trade,
    ts_ms=st.one_of(st.integers(-10, T0 + 10**7), st.floats(allow_nan=True), st.none()),
    price=garbage_number,
    amount=garbage_number,
    side=st.sampled_from(("buy", "sell", "BUY", "", "long")),
    id=st.one_of(st.just(""), st.text(max_size=2)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(garbage_trade, max_size=60), st.integers(T0, T0 + 10**7))
def test_arbitrary_garbage_never_yields_an_invalid_bar(trades, now) -> None:
    s = Sanitiser()
    b = BarBuilder()
    bars, ok = [], []
    for t in trades:
        if s.check_trade(t, now) is None:
            ok.append(t)
            bars += b.add_trade(t)
    bars += b.flush(now + 10 * 60_000)
    assert len(ok) + sum(v for k, v in s.counts.items() if k != "reanchored") == len(trades)
    assert b.rejected == {}  # the sanitiser already stopped everything the builder would refuse
    for t in ok:
        assert isinstance(t.ts_ms, int) and 0 < t.ts_ms <= now + s.future_tolerance_ms
        assert math.isfinite(t.price) and t.price > 0 and math.isfinite(t.amount) and t.amount > 0
    assert sum(bar["trades"] for bar in bars) + b.late_trades + b.duplicates == len(ok)
    for bar in bars:
        assert all(math.isfinite(bar[k]) for k in ("open", "high", "low", "close", "volume"))
        assert 0 < bar["low"] <= min(bar["open"], bar["close"]) <= max(bar["open"], bar["close"]) <= bar["high"]


candle = st.fixed_dictionaries({
    "minute": st.integers(0, 200),
    "open": garbage_number, "high": garbage_number, "low": garbage_number, "close": garbage_number,
    "volume": garbage_number,
    "taker_buy_volume": st.one_of(st.none(), st.just(math.nan), st.floats(-1, 1e3)),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(candle, max_size=60))
def test_accepted_candles_are_always_valid_and_in_order(candles) -> None:
    s = Sanitiser()
    now = T0 + 150 * 60_000
    accepted = []
    for c in candles:
        bar = {**c, "open_time": datetime.fromtimestamp((T0 + c["minute"] * 60_000) / 1000, tz=UTC)}
        if s.check_candle(bar, now) is None:
            accepted.append(bar)
    assert len(accepted) + sum(v for k, v in s.counts.items() if k != "reanchored") == len(candles)
    times = [bar["open_time"] for bar in accepted]
    assert times == sorted(set(times))  # strictly increasing: no duplicate, nothing out of order
    for bar in accepted:
        o, h, lo, c, v = (float(bar[k]) for k in ("open", "high", "low", "close", "volume"))
        assert all(math.isfinite(x) for x in (o, h, lo, c, v))
        assert 0 < lo <= min(o, c) <= max(o, c) <= h and v >= 0
        assert bar["open_time"].timestamp() * 1000 + 60_000 <= now + s.future_tolerance_ms
        buy = bar["taker_buy_volume"]
        assert buy is None or math.isnan(buy) or 0 <= buy <= v
