"""The lab pages' chart data (apps/lab/charts.py), decimated on the server: against pandas on the real
90-day file and against hand-worked curves. Pure (no database, no Redis): `pytest -p no:django` works."""

import math

import numpy as np
import pandas as pd
import pytest

from apps.engine.performance import max_drawdown
from apps.lab.charts import (
    MAX_POINTS,
    bucket_minutes,
    chart_time,
    daily_bars,
    equity_chart,
    histogram_bars,
    minmax_decimate,
    monthly_grid,
    ohlc_buckets,
    underwater,
)
from tests.datafiles import _flush_redis, load_freqtrade_1m, services_use_test_redis  # noqa: F401

MIN = 60_000


def _ms(index: pd.DatetimeIndex) -> np.ndarray:
    return pd.DatetimeIndex(index).as_unit("ms").asi8


@pytest.fixture(scope="module")
def btc() -> pd.DataFrame:
    return load_freqtrade_1m()


def test_full_range_of_the_90_day_file_is_the_pandas_resample(btc):
    t = _ms(btc.index)
    out = ohlc_buckets(t, btc["open"].to_numpy(), btc["high"].to_numpy(), btc["low"].to_numpy(),
                       btc["close"].to_numpy())
    width = out["width_min"]
    assert len(out["t"]) <= MAX_POINTS and len(out["t"]) > MAX_POINTS // 4  # the screen's worth, not a handful
    assert bucket_minutes(int(t[0]), int(t[-1]) + MIN) == width
    # pandas: epoch-aligned buckets of the same width, empty ones dropped
    ref = btc.resample(f"{width}min", origin="epoch").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "count"})
    ref = ref[ref["volume"] > 0]
    assert out["t"] == _ms(ref.index).tolist()
    for col in ("open", "high", "low", "close"):
        assert out[col] == ref[col].tolist(), col
    assert out["bars"] == ref["volume"].astype(int).tolist()
    assert sum(out["bars"]) == len(btc)


def test_a_zoomed_range_gets_finer_buckets_down_to_the_raw_candles(btc):
    t = _ms(btc.index)
    cols = [btc[c].to_numpy() for c in ("open", "high", "low", "close")]
    start = int(t[50_000])
    day = ohlc_buckets(t, *cols, start_ms=start, end_ms=start + 1440 * MIN)
    assert day["width_min"] == 1  # a day is 1,440 minutes: the raw candles fit
    raw = btc.iloc[50_000:50_000 + 1440]
    assert day["t"] == _ms(raw.index).tolist() and day["close"] == raw["close"].tolist()
    week = ohlc_buckets(t, *cols, start_ms=start, end_ms=start + 7 * 1440 * MIN)
    assert week["width_min"] == 10 and len(week["t"]) <= MAX_POINTS
    assert min(week["low"]) == btc["low"].iloc[50_000:50_000 + 7 * 1440].min()
    assert max(week["high"]) == btc["high"].iloc[50_000:50_000 + 7 * 1440].max()


def test_buckets_are_aligned_so_panning_keeps_them(btc):
    t = _ms(btc.index)
    cols = [btc[c].to_numpy() for c in ("open", "high", "low", "close")]
    a = ohlc_buckets(t, *cols, start_ms=int(t[1000]), end_ms=int(t[1000]) + 20 * 1440 * MIN)
    b = ohlc_buckets(t, *cols, start_ms=int(t[1000]) + 7 * MIN, end_ms=int(t[1000]) + 20 * 1440 * MIN + 7 * MIN)
    w = a["width_min"]
    assert w == b["width_min"] and all(x % (w * MIN) == 0 for x in a["t"] + b["t"])
    common = sorted(set(a["t"][1:-1]) & set(b["t"][1:-1]))  # the inner buckets are the same buckets
    assert len(common) > 100
    for x in common:
        assert a["high"][a["t"].index(x)] == b["high"][b["t"].index(x)]


def test_a_gap_is_absent_not_filled_and_an_empty_range_is_empty():
    t = np.array([0, 1, 2, 10, 11], dtype=np.int64) * MIN  # minutes 3..9 missing
    px = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = ohlc_buckets(t, px, px + 0.5, px - 0.5, px, start_ms=0, end_ms=12 * MIN, max_points=4)
    assert out["width_min"] == 5  # ceil(12 / 5) + 1 = 4 buckets at most
    assert out["t"] == [0, 10 * MIN] and out["bars"] == [3, 2]
    assert out["open"] == [1.0, 4.0] and out["close"] == [3.0, 5.0] and out["high"] == [3.5, 5.5]
    empty = ohlc_buckets(t, px, px, px, px, start_ms=100 * MIN, end_ms=200 * MIN)
    assert empty["t"] == [] and empty["width_min"] == 1


def test_minmax_decimation_keeps_a_one_point_spike_that_sampling_loses():
    n = 100_000
    y = np.sin(np.arange(n) / 5000.0) * 100 + 10_000
    y[43_217] = 20_000  # a single-bar spike
    y[71_003] = 1_000  # and a single-bar crash
    t = np.arange(n, dtype=np.int64) * MIN
    td, yd = minmax_decimate(t, y, 500)
    assert len(yd) <= 500
    assert yd.max() == 20_000 and yd.min() == 1_000
    assert td[0] == t[0] and td[-1] == t[-1] and np.all(np.diff(td) > 0)  # in time order, ends kept
    assert y[:: n // 500].max() < 20_000  # what every-k-th sampling would have drawn
    # every slice's extremes are points of the result
    width = math.ceil(n / ((500 - 2) // 2))
    kept = set(td.tolist())
    for s in range(0, n, width):
        sl = y[s:s + width]
        assert t[s + int(sl.argmax())] in kept and t[s + int(sl.argmin())] in kept
    small_t, small_y = minmax_decimate(t[:10], y[:10], 500)
    assert small_y.tolist() == y[:10].tolist()  # nothing to decimate


def test_underwater_by_hand_and_against_max_drawdown(btc):
    e = np.array([100.0, 110.0, 99.0, 121.0, 108.9])
    assert underwater(e).round(10).tolist() == [0.0, 0.0, -10.0, 0.0, -10.0]
    curve = btc["close"].to_numpy()  # any long real curve
    assert -underwater(curve).min() / 100 == pytest.approx(max_drawdown(curve), rel=1e-12)


def test_equity_chart_keeps_the_deepest_drawdown_exactly(btc):
    t = _ms(btc.index)
    e = btc["close"].to_numpy() * 0.1  # an equity-like curve of 130k points
    out = equity_chart(t, e)
    assert out["of"] == len(e) and out["points"] <= MAX_POINTS + 2 and out["points"] == len(out["t"])
    assert min(out["drawdown"]) == pytest.approx(-max_drawdown(e) * 100, rel=1e-12)
    assert max(out["equity"]) == e.max() and min(out["equity"]) == e.min()
    assert out["t"][0] == t[0] and out["t"][-1] == t[-1]


def test_monthly_grid_from_the_reports_rows():
    # apps.engine.report stores [["YYYY-MM", return %, P&L], ...]; a month without a figure stays empty
    rows = monthly_grid([["2024-12", 10.0, 1000.0], ["2025-01", -10.0, -1100.0], ["2025-02", None, 0.0],
                         ["2025-03", 5.0, 495.0]])
    assert [r["year"] for r in rows] == [2024, 2025]
    assert rows[0]["months"][11] == 10.0 and rows[0]["months"][:11] == [None] * 11  # not measured, not 0 %
    assert rows[0]["year_pct"] == pytest.approx(10.0)
    assert rows[1]["months"][:4] == [-10.0, None, 5.0, None]
    assert rows[1]["year_pct"] == pytest.approx((0.9 * 1.05 - 1) * 100)  # compounded: -5.5 %, not -5 %
    assert monthly_grid([]) == []


def test_histogram_bars_from_the_reports_distribution():
    out = histogram_bars({"edges": [-0.5, -0.25, 0.0, 0.25], "counts": [2, 0, 5], "unit": "%"})
    assert out == {"left": [-0.5, -0.25, 0.0], "width": [0.25, 0.25, 0.25], "count": [2, 0, 5], "n": 7}
    assert histogram_bars({"edges": [], "counts": []})["n"] == 0
    assert histogram_bars(None)["left"] == []
    assert histogram_bars({"edges": [0.0], "counts": [3]})["count"] == []  # malformed: nothing drawn


def test_daily_bars_and_chart_time():
    d = daily_bars([["2025-05-20", "12.5", 3, "1.2"], ["2025-05-21", -4.0, 1, 0.4]])
    assert d == {"day": ["2025-05-20", "2025-05-21"], "pnl": [12.5, -4.0], "trades": [3, 1], "fees": [1.2, 0.4]}
    assert chart_time([0, 90_061_000]) == ["1970-01-01 00:00:00", "1970-01-02 01:01:01"]
