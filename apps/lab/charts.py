"""Chart data for the lab's pages, decimated on the server (DESIGN §13: a page never ships more points than
the screen has pixels). Pure numpy: no Django, no database; the views hand in arrays and send the result.

- `ohlc_buckets`: candles of a visible range as at most `max_points` OHLC buckets. The bucket width is the
  smallest "nice" number of minutes (1, 2, 5, 15, 30, 60 ... 1 day ...) that fits, and buckets are aligned
  to multiples of that width since the epoch, so panning at one zoom level never reshuffles them. A bucket
  is exactly the resampled candle: first open, highest high, lowest low, last close.
- `minmax_decimate`: a line (the equity curve) reduced to the first and last points plus, per slice of the
  series, the points holding the slice's minimum and maximum, in time order. The envelope survives: every
  peak and trough of the full series is a point of the result (a plain every-k-th sample would cut them).
- `underwater`: the drawdown at every point, (equity / running peak - 1) x 100, <= 0. Its minimum is
  -100 x `apps.engine.performance.max_drawdown` of the same curve (a test holds the two together).
- `equity_chart`: the equity and its underwater curve on ONE shared decimated x: the union of the min/max
  points of both, so the deepest drawdown of the full series is exactly on the chart.
- `daily_bars`, `monthly_grid`, `histogram_bars`: the run's stored daily rows, monthly returns and trade-return
  distribution (computed once, by `apps.engine.report`) in the shapes the templates and lab.js draw.

Times are int64 milliseconds since the epoch (UTC) in and out; `chart_time` turns them into the naive
UTC strings plotly wants (it ignores time zones; the axes say UTC).
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_POINTS = 2000  # a wide screen is ~2,000 device pixels across; more points only cost bytes
_MINUTE_MS = 60_000
# Bucket widths in minutes: the steps a reader recognises (1m ... 1d, then days and a week).
NICE_MINUTES = (1, 2, 3, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440, 2880, 4320, 10080, 20160, 43200)


def chart_time(ms: Any) -> list[str]:
    """int64 ms since the epoch -> "YYYY-MM-DD HH:MM:SS" (naive UTC, what plotly reads as a date)."""
    arr = np.asarray(ms, dtype="int64").astype("datetime64[ms]").astype("datetime64[s]")
    return [s.replace("T", " ") for s in np.datetime_as_string(arr, unit="s").tolist()]


def bucket_minutes(start_ms: int, end_ms: int, max_points: int = MAX_POINTS) -> int:
    """The smallest nice width (minutes) whose epoch-aligned buckets over [start, end) number <= max_points.

    A range of s minutes touches at most ceil(s / w) + 1 aligned buckets of w minutes (one partial at each
    edge); the widest step is used when even that is too many.
    """
    span_min = max(1.0, (end_ms - start_ms) / _MINUTE_MS)
    for w in NICE_MINUTES:
        if math.ceil(span_min / w) + 1 <= max_points:
            return w
    return NICE_MINUTES[-1]


def ohlc_buckets(t_ms: np.ndarray, o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, *,
                 start_ms: int | None = None, end_ms: int | None = None,
                 max_points: int = MAX_POINTS) -> dict[str, Any]:
    """1m candles (sorted by open time) -> OHLC buckets of the range [start_ms, end_ms).

    The range defaults to the candles' own span; the width is chosen from the RANGE (not the candle count),
    so a range with a gap in the data is bucketed like the same range without one. Empty buckets (a gap)
    are simply absent. Returns {"width_min", "t" (bucket open ms), "open", "high", "low", "close", "bars"
    (candles per bucket)} as lists.
    """
    t_ms = np.asarray(t_ms, dtype=np.int64)
    if start_ms is None:
        start_ms = int(t_ms[0]) if len(t_ms) else 0
    if end_ms is None:
        end_ms = int(t_ms[-1]) + _MINUTE_MS if len(t_ms) else start_ms + _MINUTE_MS
    width = bucket_minutes(start_ms, end_ms, max_points)
    keep = (t_ms >= start_ms) & (t_ms < end_ms)
    t, o, h, low, c = (np.asarray(a)[keep] for a in (t_ms, o, h, low, c))
    out: dict[str, Any] = {"width_min": width, "t": [], "open": [], "high": [], "low": [], "close": [], "bars": []}
    if len(t) == 0:
        return out
    w_ms = width * _MINUTE_MS
    key = t // w_ms
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(t)]
    out.update(
        t=(key[starts] * w_ms).tolist(),
        open=np.asarray(o, dtype=np.float64)[starts].tolist(),
        high=np.maximum.reduceat(np.asarray(h, dtype=np.float64), starts).tolist(),
        low=np.minimum.reduceat(np.asarray(low, dtype=np.float64), starts).tolist(),
        close=np.asarray(c, dtype=np.float64)[ends - 1].tolist(),
        bars=(ends - starts).tolist(),
    )
    return out


def minmax_indices(y: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted indices of the points `minmax_decimate` keeps: all of them when they fit, else the first and
    last plus each slice's argmin and argmax ((max_points - 2) // 2 slices of equal length). NaN is skipped
    inside a slice; a slice of NaN only keeps nothing."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    slices = max(1, (max_points - 2) // 2)
    width = math.ceil(n / slices)
    slices = math.ceil(n / width)
    padded = np.full(slices * width, np.nan)
    padded[:n] = y
    grid = padded.reshape(slices, width)
    finite = np.isfinite(grid).any(axis=1)
    base = np.arange(slices) * width
    lo = np.where(np.isfinite(grid), grid, np.inf).argmin(axis=1) + base
    hi = np.where(np.isfinite(grid), grid, -np.inf).argmax(axis=1) + base
    return np.unique(np.concatenate(([0, n - 1], lo[finite], hi[finite])))


def minmax_decimate(t: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(t, y) reduced to at most max_points points that keep every slice's extremes (see module doc)."""
    idx = minmax_indices(y, max_points)
    return np.asarray(t)[idx], np.asarray(y, dtype=np.float64)[idx]


def underwater(equity: np.ndarray) -> np.ndarray:
    """Drawdown in % of the running peak at every point: (equity / peak - 1) x 100, 0 at a new high.

    The same peak and fraction as `apps.engine.performance.max_drawdown` (which returns the largest one
    as a positive fraction); a non-positive peak (a ruined account) reads -100.
    """
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0:
        return e.copy()
    peak = np.fmax.accumulate(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (e / peak - 1.0) * 100.0, -100.0)


def equity_chart(t_ms: np.ndarray, equity: np.ndarray, max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Equity and underwater drawdown on one decimated x (at most ~max_points points).

    Each curve contributes its own min/max points with half the budget, so the deepest point of the
    underwater curve (the max drawdown) and the highest and lowest equity are all drawn exactly.
    """
    t_ms = np.asarray(t_ms, dtype=np.int64)
    e = np.asarray(equity, dtype=np.float64)
    dd = underwater(e)
    half = max(4, max_points // 2)
    idx = np.union1d(minmax_indices(e, half), minmax_indices(dd, half)).astype(np.int64)
    return {
        "t": t_ms[idx].tolist(),
        "equity": e[idx].tolist(),
        "drawdown": dd[idx].tolist(),
        "points": int(len(idx)),
        "of": int(len(e)),
    }


def daily_bars(daily: Sequence[Sequence[Any]]) -> dict[str, list]:
    """The run's stored daily rows [[day, net pnl, trades, fees], ...] -> plotly bar arrays."""
    out: dict[str, list] = {"day": [], "pnl": [], "trades": [], "fees": []}
    for row in daily:
        day, pnl, trades, fees = row[0], row[1], row[2], row[3]
        out["day"].append(str(day))
        out["pnl"].append(float(pnl))
        out["trades"].append(int(trades))
        out["fees"].append(float(fees))
    return out


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def monthly_grid(monthly: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The report's monthly returns ([["YYYY-MM", return % | None, P&L], ...], `apps.engine.report`) as a table:
    one row per year {"year", "months": [12 x float | None], "year_pct"}. Months outside the run are None,
    never 0 (nothing was measured); the year's figure compounds its measured months: prod(1 + r) - 1."""
    rows: dict[int, dict[str, Any]] = {}
    for item in monthly:
        ym, ret = str(item[0]), item[1]
        year, month = int(ym[:4]), int(ym[5:7])
        row = rows.setdefault(year, {"year": year, "months": [None] * 12, "year_pct": None})
        if ret is None or not math.isfinite(float(ret)):
            continue
        row["months"][month - 1] = float(ret)
        growth = 1.0 if row["year_pct"] is None else 1.0 + row["year_pct"] / 100.0
        row["year_pct"] = (growth * (1.0 + float(ret) / 100.0) - 1.0) * 100.0
    return [rows[y] for y in sorted(rows)]


def histogram_bars(distribution: dict[str, Any] | None) -> dict[str, Any]:
    """The report's trade-return distribution ({"edges", "counts"}, `apps.engine.report`) as plotly bars:
    {"left" (bin left edges, %), "width" (one per bin), "count", "n" (trades)}; empty lists for no trades."""
    edges = list((distribution or {}).get("edges") or [])
    counts = [int(c) for c in (distribution or {}).get("counts") or []]
    if len(edges) != len(counts) + 1:
        return {"left": [], "width": [], "count": [], "n": 0}
    return {"left": [float(e) for e in edges[:-1]],
            "width": [float(b) - float(a) for a, b in zip(edges[:-1], edges[1:], strict=True)],
            "count": counts, "n": sum(counts)}
